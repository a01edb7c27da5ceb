"""Volume I/O keeps the grid: oblique and left-handed volumes round-trip exactly."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.provenance import SCALE_KEY
from SyntheticMRILib.io.volumes import (
    COMPACT_BITS, check_output, check_output_file, check_output_folder, quantize, read_header, read_volume,
    write_volume,
)

from conftest import make_maps


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz", ".nii", ".nhdr", ".mhd"])
def test_oblique_left_handed_round_trip(tmp_path, suffix):
    volume = make_maps()["t1"]
    back = read_volume(write_volume(volume, tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(back.array, volume.array)
    # NRRD and MHA store geometry as decimal doubles: exact. NIfTI stores its sform
    # in float32, so an oblique direction survives only to float32 precision.
    tolerance = 1e-6 if suffix.startswith(".nii") else 1e-12
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=0, atol=tolerance)
    np.testing.assert_allclose(back.origin, volume.origin, rtol=0, atol=tolerance * 100)
    np.testing.assert_allclose(back.direction, volume.direction, rtol=0, atol=tolerance)
    assert np.linalg.det(np.reshape(back.direction, (3, 3))) < 0


def test_ijk_to_ras_matches_itk_physical_points():
    volume = make_maps()["t1"]
    image = volume.to_image()
    matrix = volume.ijk_to_ras()
    for index in [(0, 0, 0), (3, 5, 7), (12, 10, 8)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        ras = matrix @ np.array([*index, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


def test_write_refuses_to_overwrite(tmp_path):
    volume = make_maps()["pd"]
    path = write_volume(volume, tmp_path / "pd.nrrd")
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_volume(volume.with_array(volume.array * 2), path)
    assert path.read_bytes() == before
    write_volume(volume.with_array(volume.array * 2), path, overwrite=True)
    np.testing.assert_array_equal(read_volume(path).array, volume.array * 2)


def test_output_checks_are_one_rule_for_files_volumes_and_folders(tmp_path):
    """check_output_file (any file), check_output (a volume: its type too) and check_output_folder say the same."""
    taken = tmp_path / "taken.ctbl"
    taken.write_text("x")
    with pytest.raises(InputError, match="taken.ctbl: already exists; pass --overwrite to replace it"):
        check_output_file(taken)
    assert check_output_file(taken, overwrite=True) == taken
    with pytest.raises(InputError, match="missing: no such folder"):
        check_output_file(tmp_path / "missing" / "table.ctbl", need_folder=True)
    assert check_output_file(tmp_path / "missing" / "table.ctbl") == tmp_path / "missing" / "table.ctbl"
    with pytest.raises(InputError, match="unsupported file type"):
        check_output(tmp_path / "v.png")
    with pytest.raises(InputError, match="already exists"):
        check_output(write_volume(make_maps()["pd"], tmp_path / "pd.nrrd"))
    assert check_output_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty") == tmp_path / "empty"
    with pytest.raises(InputError, match="folder is not empty; pass --overwrite or choose another folder"):
        check_output_folder(tmp_path)
    assert check_output_folder(tmp_path, overwrite=True) == tmp_path


def test_with_array_keeps_grid_and_checks_shape():
    volume = make_maps()["t2"]
    other = volume.with_array(np.ones_like(volume.array))
    assert other.same_grid(volume)
    with pytest.raises(InputError, match="does not match"):
        volume.with_array(np.ones((2, 2, 2)))


def test_vector_image_is_refused(tmp_path):
    image = sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3)
    sitk.WriteImage(image, str(tmp_path / "vec.nrrd"))
    with pytest.raises(InputError, match="components"):
        read_volume(tmp_path / "vec.nrrd")


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    """A write that dies half way (killed, disk full) must not leave a partial volume behind."""
    volume = make_maps()["t1"]

    def broken_write(image, filename, useCompression=False):
        open(filename, "wb").write(b"NRRD0004\nhalf")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken_write)
    with pytest.raises(RuntimeError):
        write_volume(volume, tmp_path / "t1.nrrd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".nii.gz", ".nii"])
def test_scaled_int16_storage_round_trips_within_half_a_quantum(tmp_path, suffix):
    """bits=12: int16 on disk, the largest magnitude at 4095 (signed images keep their sign and zero), and
    read_volume gives float32 values within half a quantum (scale / 2) of what was written, on the same grid."""
    volume = make_maps()["t1"]
    signed = volume.with_array((volume.array - 1500) / 3000)  # a PSIR-like image: both signs, exact zeros
    signed.array[volume.array == 0] = 0
    path = write_volume(signed, tmp_path / f"v{suffix}", bits=COMPACT_BITS)
    header = read_header(path)
    integers, scale = quantize(signed.array, COMPACT_BITS)
    assert scale == pytest.approx(np.abs(signed.array).max() / 4095, rel=1e-6)
    assert np.abs(integers).max() == 4095 and integers.min() < 0 and integers.dtype == np.int16
    if suffix.startswith(".nii"):  # the standard scl_slope, applied by every NIfTI reader (SimpleITK too)
        assert float(header.metadata["scl_slope"]) == pytest.approx(scale, rel=1e-5)  # ITK prints 6 digits
        assert header.metadata["datatype"] == "4"  # NIFTI_TYPE_INT16
    else:
        assert header.pixel_type == "16-bit signed integer" and float(header.metadata[SCALE_KEY]) == scale
    back = read_volume(path)
    assert back.array.dtype == np.float32 and back.same_grid(signed, tolerance=1e-5)
    assert np.abs(back.array.astype(np.float64) - signed.array).max() <= scale / 2 * (1 + 1e-3)  # float32 read-back
    assert np.all(back.array[signed.array == 0] == 0)
    np.testing.assert_allclose(back.array, integers * scale, rtol=1e-6, atol=0)  # the stored integers, scaled


def test_quantize_edge_cases():
    zeros, scale = quantize(np.zeros((2, 3, 4), np.float32))
    assert scale == 1.0 and not zeros.any()
    with pytest.raises(InputError, match="non-finite"):
        quantize(np.array([[[1.0, np.nan]]]))
    with pytest.raises(InputError, match="bits"):
        quantize(np.ones((2, 2, 2)), bits=16)
    assert np.abs(quantize(np.array([[[-3.0, 1.0]]]), bits=15)[0]).max() == 32767


def test_a_bad_scale_field_is_a_clear_error(tmp_path):
    image = sitk.GetImageFromArray(np.ones((3, 3, 3), np.int16))
    image.SetMetaData(SCALE_KEY, "-2")
    sitk.WriteImage(image, str(tmp_path / "bad.nrrd"))
    with pytest.raises(InputError, match="SyntheticMRI.Scale must be a positive number"):
        read_volume(tmp_path / "bad.nrrd")


def test_read_header_reads_no_voxels_and_says_what_is_wrong(tmp_path):
    volume = make_maps()["pd"]
    path = write_volume(volume, tmp_path / "pd.nrrd", metadata={"SyntheticMRI.Preset": "T1w"})
    header = read_header(path)
    assert header.size == volume.array.shape[::-1] and header.spacing == pytest.approx(volume.spacing, abs=1e-12)
    assert header.origin == pytest.approx(volume.origin, abs=1e-12)
    assert header.direction == pytest.approx(volume.direction, abs=1e-12)
    assert header.pixel_type == "32-bit float" and header.metadata["SyntheticMRI.Preset"] == "T1w"
    (tmp_path / "junk.nrrd").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot be read as an image"):
        read_header(tmp_path / "junk.nrrd")
    with pytest.raises(InputError, match="no such file"):
        read_header(tmp_path / "missing.nrrd")
