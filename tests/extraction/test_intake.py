"""Site intake (issue 13): no mislabelled case, no hang, no memory blow-up, and ``check`` agrees with ``extract``.

Every scenario runs through the commands' code paths (``check_manifest`` / ``site-client check`` and
``extract_cohort``) on real files: a gzip "mask bomb", ``/dev/zero``, a FIFO, a socket, symbolic links, an
oversized file, truncated / NaN / constant images, one-voxel and float masks, and repeated case ids.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from protocols import load_protocol, protocol_id
from site_client.check import check_manifest
from site_client.extraction import extract_cohort
from site_client.manifest import read_manifest

PROTOCOL_YAML = """
study: {name: intake}
label: {column: label, positive: "1", negative: "0"}
covariates:
  categorical: [{name: sex, levels: [F, M]}]
  continuous: [{name: age, min: 18, max: 100}]
validation: {min_cases_per_class: 1}
extraction:
  resampling: {spacing: [1.0, 1.0, 1.0]}
  resegmentation: {range: [-1000, 3000]}
  discretisation: {method: fixed_bin_width, bin_width: 25}
  max_voxels: 20000
"""
HEADER = "case_id,image,mask,label,sex,age"


def _write(array: np.ndarray, path: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def _ball(shape=(16, 16, 16), radius=5.0) -> np.ndarray:
    grid = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return (np.sqrt((grid**2).sum(axis=0)) <= radius).astype(np.uint8)


def _intensities(seed: int, shape=(16, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 40, size=shape).astype(np.int16)


def nifti_bomb(path: Path, size=(1000, 1000, 1000), payload_bytes=4 << 20) -> Path:
    """A NIfTI-1 uint8 .nii.gz whose header claims ``size`` voxels, with only ``payload_bytes`` of zeros behind
    it (compresses to a few KiB). Written field by field from the NIfTI-1 layout, not with our reader."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)                            # sizeof_hdr
    struct.pack_into("<8h", header, 40, 3, *size, 1, 1, 1, 1)          # dim
    struct.pack_into("<hh", header, 70, 2, 8)                          # datatype uint8, bitpix
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)        # pixdim
    struct.pack_into("<f", header, 108, 352.0)                         # vox_offset
    header[344:348] = b"n+1\0"                                         # magic
    with gzip.open(path, "wb") as handle:
        handle.write(bytes(header) + b"\0" * 4)
        chunk = b"\0" * (1 << 20)
        for _ in range(payload_bytes // len(chunk)):
            handle.write(chunk)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intake")
    (root / "protocol.yaml").write_text(PROTOCOL_YAML, encoding="utf-8")
    _write(_ball(), root / "mask.nii.gz")
    for seed in range(4):
        _write(_intensities(seed), root / f"img{seed}.nii.gz")
    return root


def _manifest(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _check(manifest: Path, folder: Path):
    protocol = load_protocol(folder / "protocol.yaml")
    return check_manifest(read_manifest(manifest), protocol, protocol_id(protocol))


def _extract(manifest: Path, folder: Path, out_name: str, workers: int = 1, **kwargs):
    out = folder / out_name
    result = extract_cohort(manifest, folder / "protocol.yaml", out, workers=workers, progress=False, **kwargs)
    errors_path = out.with_name(out.name + ".errors.csv")
    errors = pd.read_csv(errors_path, dtype=str, keep_default_na=False) if errors_path.exists() else None
    return result, pd.read_csv(out, dtype=str), errors


def test_repeated_case_id_never_carries_another_rows_label(folder):
    """The issue's scenario: line 2 and line 21 share an id; neither row is written, both are named."""
    rows = [f"c{i:02d},img{i % 4}.nii.gz,mask.nii.gz,{i % 2},{'FM'[i % 2]},{40 + i}" for i in range(1, 20)]
    rows[0] = "dup,img0.nii.gz,mask.nii.gz,0,M,50"                        # line 2
    rows.append("dup,img1.nii.gz,mask.nii.gz,1,F,69")                     # line 21
    manifest = _manifest(folder, "dup.csv", rows)
    expected = ("case_id 'dup' is used on manifest lines 2, 21; case ids must be unique: none of these rows is used "
                "(each could carry another row's label and covariates)")

    report = _check(manifest, folder)
    assert [(p.line, p.field, p.message) for p in report.errors] == [(2, "case_id", expected), (21, "case_id", expected)]

    result, table, errors = _extract(manifest, folder, "dup.csv.out.csv", workers=2)
    assert "dup" not in set(table["case_id"]) and len(table) == 18
    assert errors[["case_id", "line", "error"]].values.tolist() == [["dup", "2", expected], ["dup", "21", expected]]
    assert sorted(result.failed) == [("dup", expected), ("dup", expected)]
    # every written row carries its own manifest line's label and covariates
    source = pd.read_csv(manifest, dtype=str).set_index("case_id")
    for _, row in table.iterrows():
        assert tuple(row[["label", "sex", "age"]]) == tuple(source.loc[row["case_id"], ["label", "sex", "age"]])


def test_mask_bomb_is_refused_from_its_header_in_check_and_extract(folder):
    """A 4 MiB-of-zeros .nii.gz mask claiming 1000^3 voxels: refused before a voxel is read, in little memory."""
    nifti_bomb(folder / "bomb.nii.gz")
    assert (folder / "bomb.nii.gz").stat().st_size < 100_000
    manifest = _manifest(folder, "bomb.csv", ["b1,img0.nii.gz,bomb.nii.gz,1,F,50", "ok,img1.nii.gz,mask.nii.gz,0,M,50"])
    expected = (f"{folder / 'bomb.nii.gz'}: mask too large for memory: 1,000,000,000 voxels (size (1000, 1000, 1000)) "
                "from its header exceeds the protocol's extraction.max_voxels = 20,000")
    # The child reports its own peak resident memory at exit: VmHWM of its own address space. (ru_maxrss is no
    # use here: Linux carries it over fork and execve, so the child would report pytest's own size, and
    # RUSAGE_CHILDREN also counts earlier tests' children that subprocess reaps meanwhile.)
    report_peak = ("import atexit, runpy, sys\n"
                   "def peak():\n"
                   "    hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0].split()[1]\n"
                   "    sys.stderr.write(f'\\nPEAK_RSS_KIB {hwm}\\n')\n"
                   "atexit.register(peak)\n"
                   "sys.argv = ['site-client', *sys.argv[1:]]\n"
                   "runpy.run_module('site_client', run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-c", report_peak, "check", "-m", str(manifest), "-p",
                          str(folder / "protocol.yaml"), "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    errors = json.loads(run.stdout)["errors"]
    assert len(errors) == 1 and errors[0]["line"] == 2 and errors[0]["field"] == "mask"
    assert errors[0]["message"].startswith(expected)
    peak_mib = int(run.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0]) / 1024
    assert peak_mib < 1024, f"check used {peak_mib:.0f} MiB on a mask bomb"
    _, table, errors = _extract(manifest, folder, "bomb.out.csv")
    assert list(table["case_id"]) == ["ok"]
    assert errors.set_index("case_id").loc["b1", "error"].startswith(expected)


def test_devices_fifos_sockets_and_links_are_refused_without_blocking(folder, tmp_path):
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.nii.gz"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    (tmp_path / "dangling.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (tmp_path / "linked.nii.gz").symlink_to(folder / "img2.nii.gz")
    rows = {
        "zero": ("/dev/zero", "a character device; the image must be a regular image file (or a DICOM folder)"),
        "fifo": (str(fifo), "a named pipe (FIFO); the image must be a regular image file"),
        "sock": (str(sock_path), "a socket; the image must be a regular image file"),
        "dangling": (str(tmp_path / "dangling.nii.gz"),
                     f"broken symbolic link (to {tmp_path / 'nowhere.nii.gz'}: no such file, or a link loop)"),
    }
    lines = [f"{case},{path},mask.nii.gz,1,F,50" for case, (path, _) in rows.items()]
    lines.append(f"linked,{tmp_path / 'linked.nii.gz'},mask.nii.gz,0,M,50")
    manifest = _manifest(folder, "special.csv", lines)
    try:
        report = _check(manifest, folder)
        result, table, errors = _extract(manifest, folder, "special.out.csv", workers=2)
    finally:
        server.close()
    by_case = {p.case_id: p.message for p in report.errors}
    errors = errors.set_index("case_id")["error"]
    for case, (path, reason) in rows.items():
        assert by_case[case] == errors[case], f"{case}: check and extract disagree"
        assert by_case[case].startswith(f"{path}") and reason in by_case[case], by_case[case]
    # a link that resolves to a regular image is followed, and reported by check
    assert list(table["case_id"]) == ["linked"]
    link = f"image {tmp_path / 'linked.nii.gz'} is a symbolic link to {folder / 'img2.nii.gz'}"
    assert [w.message for w in report.warnings] == [link]
    assert result.notes == [f"case linked: {link}"]


def test_oversized_file_is_refused_from_stat(folder, tmp_path):
    huge = tmp_path / "huge.nrrd"
    with huge.open("wb") as handle:  # sparse: 40 MB of nothing, never read
        handle.truncate(40_000_000)
    manifest = _manifest(folder, "huge.csv", [f"h,{huge},mask.nii.gz,1,F,50"])
    message = _check(manifest, folder).errors[0].message
    assert message == (f"{huge}: 40,000,000 bytes, more than an image within extraction.max_voxels = 20,000 can take "
                       "(16,937,216 bytes); crop the image around the lesion or raise the limit")
    _, _, errors = _extract(manifest, folder, "huge.out.csv")
    assert errors["error"].tolist() == [message]


def test_a_case_past_the_time_limit_fails_with_its_own_error(folder):
    manifest = _manifest(folder, "slow.csv", ["s1,img0.nii.gz,mask.nii.gz,1,F,50", "s2,img1.nii.gz,mask.nii.gz,0,M,50"])
    for workers in (1, 2):
        result, table, errors = _extract(manifest, folder, f"slow{workers}.out.csv", workers=workers,
                                         case_time_limit_s=1e-4)
        assert table.empty
        assert errors["error"].tolist() == [
            f"case {c}: gave up after 0.0001 s (the per-case time limit); is a file on a slow or hung network share?"
            for c in ("s1", "s2")
        ]


def test_check_fails_every_case_that_extract_fails_with_the_same_message(folder):
    """Truncated .nii.gz, NaN / inf image, constant image, one-voxel mask, float mask: check == extract."""
    root = folder
    truncated = _write(_intensities(5), root / "truncated.nii.gz")
    truncated.write_bytes(truncated.read_bytes()[:-100])
    nan = _intensities(6).astype(np.float32)
    nan[8, 8, 8], nan[7, 8, 8] = np.nan, np.inf
    _write(nan, root / "nan.nrrd")
    _write(np.full((16, 16, 16), 100, np.int16), root / "constant.nii.gz")
    one = np.zeros((16, 16, 16), np.uint8)
    one[8, 8, 8] = 1
    _write(one, root / "one.nii.gz")
    _write(_ball().astype(np.float32) * np.where(np.indices((16, 16, 16))[0] < 8, 0.5, 1.0).astype(np.float32),
           root / "float_mask.nii.gz")
    _write(_ball().astype(np.float32), root / "float_int_mask.nii.gz")  # float type, integer values: fine
    rows = {
        "good": "img0.nii.gz,mask.nii.gz",
        "float_integer_mask": "img1.nii.gz,float_int_mask.nii.gz",
        "truncated": "truncated.nii.gz,mask.nii.gz",
        "nan": "nan.nrrd,mask.nii.gz",
        "constant": "constant.nii.gz,mask.nii.gz",
        "one_voxel": "img2.nii.gz,one.nii.gz",
        "float_mask": "img3.nii.gz,float_mask.nii.gz",
    }
    expected = {
        "truncated": f"{root / 'truncated.nii.gz'}: unreadable image (corrupt or truncated file",
        "nan": "image holds 2 NaN or infinite voxel(s) near the region of interest; expected finite intensities",
        "constant": "image intensity is constant (100) over the region of interest; spread, texture and correlation "
                    "features are undefined",
        "one_voxel": "the morphological mask holds 1 voxel after pre-processing; at least 2 voxels are needed",
        "float_mask": f"{root / 'float_mask.nii.gz'}: mask has non-integer values 0.5–1.0 (",
    }
    manifest = _manifest(root, "agree.csv", [f"{case},{files},{i % 2},F,50" for i, (case, files) in enumerate(rows.items())])
    report = _check(manifest, root)
    checked = {p.case_id: p.message for p in report.errors}
    _, table, errors = _extract(manifest, root, "agree.out.csv", workers=2)
    extracted = errors.set_index("case_id")["error"].to_dict()
    assert checked == extracted, "check and extract must fail the same cases with the same messages"
    assert set(checked) == set(expected) and list(table["case_id"]) == ["good", "float_integer_mask"]
    for case, start in expected.items():
        assert checked[case].startswith(start), checked[case]
    assert "voxel(s) with a fraction); expected integer labels" in checked["float_mask"]
    fields = {p.case_id: p.field for p in report.errors}
    assert fields["float_mask"] == "mask" and fields["truncated"] == "image" and fields["one_voxel"] == "mask"


def test_a_time_limit_swallowed_by_the_body_still_fails_the_case_with_its_own_error(tmp_path):
    """The timer's exception surfaces wherever the case happens to be; ``os.path.lexists`` / ``Path.exists`` catch
    ValueError (which a CaseInputError is) and would turn it into "file not found" (seen in CI). The case must
    still fail with the time-limit reason, whether the body then raises something else or carries on."""
    import time

    from site_client.extraction.deadline import CaseTimeout, time_limit
    from site_client.imaging.errors import CaseInputError

    expected = "case x: gave up after 0.01 s (the per-case time limit); is a file on a slow or hung network share?"
    with pytest.raises(CaseTimeout) as raised:
        with time_limit(0.01, "case x"):
            try:
                time.sleep(1)
            except ValueError:
                pass  # a library that swallows ValueError and carries on
    assert str(raised.value) == expected

    with pytest.raises(CaseTimeout) as raised:
        with time_limit(0.01, "case x"):
            try:
                time.sleep(1)
            except ValueError:
                raise CaseInputError(f"{tmp_path / 'img.nii.gz'}: file not found") from None
    assert str(raised.value) == expected
