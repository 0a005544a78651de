"""Image readers on top of SimpleITK: single files (NIfTI, NRRD, MHA, ...) and DICOM series folders."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from site_client.imaging.errors import CaseInputError
from site_client.imaging.geometry import Geometry


def dicom_series_files(folder: Path, series_uid: str = "") -> list[str]:
    """File names of one DICOM series in ``folder``.

    With several series and no ``series_uid`` this fails and lists the series, so the manifest can pick one.
    """
    series = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())
    if not series:
        raise CaseInputError(f"{folder}: folder holds no readable DICOM image series")
    if series_uid:
        if series_uid not in series:
            raise CaseInputError(
                f"{folder}: series_uid {series_uid} not found; series present: {', '.join(series)}"
            )
        chosen = series_uid
    elif len(series) > 1:
        raise CaseInputError(
            f"{folder}: {len(series)} DICOM series in one folder ({', '.join(series)}); "
            "name the one to use in the manifest's series_uid column"
        )
    else:
        chosen = series[0]
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), chosen))


def read_image(path: Path, series_uid: str = "") -> sitk.Image:
    """Read an image file or a DICOM series folder."""
    if not path.exists():
        raise CaseInputError(f"{path}: file not found")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(dicom_series_files(path, series_uid))
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except CaseInputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reader error"
        raise CaseInputError(f"{path}: unreadable image ({first})") from None


def read_geometry(path: Path, series_uid: str = "") -> Geometry:
    """Header-only read of size, spacing, origin and direction (no voxel data for files)."""
    if not path.exists():
        raise CaseInputError(f"{path}: file not found")
    try:
        if path.is_dir():
            files = dicom_series_files(path, series_uid)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            return Geometry.of(reader.Execute())
        info = sitk.ImageFileReader()
        info.SetFileName(str(path))
        info.ReadImageInformation()
        return Geometry(
            size=tuple(info.GetSize()),
            spacing=tuple(info.GetSpacing()),
            origin=tuple(info.GetOrigin()),
            direction=tuple(info.GetDirection()),
        )
    except CaseInputError:
        raise
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reader error"
        raise CaseInputError(f"{path}: unreadable image ({first})") from None
