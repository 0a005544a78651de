"""Reading medical images and lesion masks (NIfTI, NRRD, MHA, DICOM series; label masks)."""
