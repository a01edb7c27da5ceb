"""Volumes on disk with their exact geometry (NRRD, NIfTI, MHA through SimpleITK).

A :class:`Volume` is an array plus the grid it lives on, in ITK conventions:
the array is indexed ``[k, j, i]`` (slowest axis first) and spacing, origin and
direction are in LPS, as written on disk. Nothing here resamples: a volume
written back lands on exactly the grid it was read from.

Compact storage (``write_volume(..., bits=12)``): a weighted image can be stored as int16
integers and one scale, as scanners store DICOM (12 bits, RescaleSlope): the values are
``stored * scale``. NRRD/MHA keep the scale in the header field ``SyntheticMRI.Scale``
(:data:`SCALE_KEY`), which :func:`read_volume` applies, so
readers of this package get float32 values back; other NRRD readers (e.g. Slicer's "Add
Data") show the stored integers, the same image up to that one factor. NIfTI uses its
standard ``scl_slope``, which every NIfTI reader applies. Quantitative maps are never
quantized here: only callers that store contrasts ask for it.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

__all__ = ["Volume", "read_volume", "write_volume", "check_output", "check_output_file", "check_output_folder",
           "EXTENSIONS", "Header", "read_header", "quantize", "COMPACT_BITS", "SCALE_KEY", "NIFTI_DESCRIPTION",
           "is_nifti", "PARTIAL_PREFIX", "partial_path", "write_atomic"]

EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
PARTIAL_PREFIX = ".partial-"  # the temporary name of a file being written (partial_path); jobs.remove_partial_files finds them
_DETACHED = (".nhdr", ".mhd")
_NIFTI = (".nii", ".nii.gz")
PathLike = Union[str, os.PathLike]
# Storage fields: the NRRD/MHA field whose value times the stored integers gives the values (NIfTI: scl_slope),
# and the NIfTI-1 header field (80 bytes) that SimpleITK names descrip.
SCALE_KEY = "SyntheticMRI.Scale"
NIFTI_DESCRIPTION = "descrip"
# Compact storage of weighted images: 12-bit integers (0..4095, -4095..4095 when signed), as scanner DICOM.
# Measured on the demo's contrasts (README, below the main command), gzip NRRD per 7-million-voxel contrast:
# float32 10.6 MB, 15 bits 5.3, 12 bits 4.4, 10 bits 3.6, 8 bits 2.6 (the maps' smooth within-tissue variation
# leaves gzip little to find, so fewer bits save little). The 12-bit step's RMS error is 2-35x below the error
# the sample's own map rounding (1 ms, PD 0.001) already puts in each contrast: nothing real is lost.
COMPACT_BITS = 12


@dataclass(frozen=True)
class Volume:
    """A 3-D array with its grid: spacing (mm), origin (mm, LPS) and row-major 3x3 direction."""

    array: np.ndarray
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Volume":
        return cls(
            sitk.GetArrayFromImage(image),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
        )

    def to_image(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same grid carrying another array of the same shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise InputError(f"array of {'x'.join(map(str, array.shape[::-1]))} voxels (x, y, z) does not match the "
                             f"grid's {'x'.join(map(str, self.size))}")
        return replace(self, array=array)

    def same_grid(self, other: "Volume", tolerance: float = 1e-4) -> bool:
        """True when both volumes have the same shape, spacing, origin and direction."""
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance)
        )

    @property
    def size(self) -> Tuple[int, int, int]:
        """Voxels along x, y, z (i, j, k): the order every message uses; ``array.shape`` is (z, y, x)."""
        return tuple(int(n) for n in self.array.shape[::-1])

    def ijk_to_ras(self) -> np.ndarray:
        """The 4x4 matrix from (i, j, k) voxel indices to RAS millimetres (Slicer's convention)."""
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)
        lps[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _check_extension(path: Path) -> None:
    if not str(path).lower().endswith(EXTENSIONS):
        raise InputError(f"{path}: unsupported file type; use one of {', '.join(EXTENSIONS)}")


def read_volume(path: PathLike) -> Volume:
    """Read a 3-D scalar volume, or raise :class:`InputError` saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    _check_extension(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "unknown reason")
        raise InputError(f"{path}: cannot be read as an image ({first.strip()[:160]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar 3-D map")
    if image.GetDimension() != 3:
        raise InputError(f"{path}: is {image.GetDimension()}-D; expected a 3-D volume")
    volume = Volume.from_image(image)
    if image.HasMetaDataKey(SCALE_KEY) and volume.array.dtype.kind in "iu":  # compact storage (module notes)
        scale = _scale_of(image.GetMetaData(SCALE_KEY), path)
        volume = volume.with_array((volume.array.astype(np.float64) * scale).astype(np.float32))
    return volume


def _scale_of(text: str, path: Path) -> float:
    try:
        scale = float(text)
    except ValueError:
        scale = float("nan")
    if not np.isfinite(scale) or scale <= 0:
        raise InputError(f"{path}: {SCALE_KEY} must be a positive number, got {text!r}")
    return scale


@dataclass(frozen=True)
class Header:
    """What a volume file says about itself without reading its voxels: size (x, y, z order), spacing,
    origin and direction (LPS), the stored voxel type and the header's key/value fields."""

    size: Tuple[int, ...]
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    pixel_type: str
    metadata: Dict[str, str]


def read_header(path: PathLike) -> Header:
    """The header of any volume file SimpleITK reads, or :class:`InputError`; the voxels are not read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "unknown reason")
        raise InputError(f"{path}: cannot be read as an image ({first.strip()[:160]})") from None
    components = reader.GetNumberOfComponents()
    pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if components != 1:
        pixel_type += f", {components} components"
    return Header(tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                  tuple(reader.GetDirection()), pixel_type,
                  {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()})


def check_output_file(path: PathLike, overwrite: bool = False, need_folder: bool = False,
                      inputs: Iterable[PathLike] = ()) -> Path:
    """The one rule for an output file of any kind: raise :class:`InputError` if ``path`` is one of ``inputs`` (even
    with ``overwrite``: inputs are never modified), if it exists (unless ``overwrite``) or, with ``need_folder``, if
    its folder is missing (writers that do not create it)."""
    path = Path(path)
    if path.exists() and any(Path(i).exists() and os.path.samefile(path, i) for i in inputs):
        raise InputError(f"{path}: is an input of this command; inputs are never overwritten, choose another output")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; pass --overwrite to replace it")
    if need_folder and not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder")
    return path


def check_output_folder(folder: PathLike, overwrite: bool = False) -> Path:
    """The same rule for an output folder: raise :class:`InputError` if it holds anything (unless ``overwrite``)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"{folder}: folder is not empty; pass --overwrite or choose another folder")
    return folder


def check_output(path: PathLike, overwrite: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Raise :class:`InputError` unless ``path`` is a writable volume type and free (or ``overwrite``).

    Callers run it before any work too, so that a refused output costs nothing.
    """
    path = Path(path)
    _check_extension(path)
    return check_output_file(path, overwrite, inputs=inputs)


def quantize(array: np.ndarray, bits: int = COMPACT_BITS) -> Tuple[np.ndarray, float]:
    """``array`` as int16 integers and the scale with ``array ~ integers * scale``: the largest magnitude
    becomes ``2**bits - 1`` (4095 for 12 bits; signed images keep their zero) and every value is rounded to
    the nearest multiple of the scale, so the error is at most ``scale / 2``. The scale is a float32 number
    (NIfTI's ``scl_slope`` is float32), so every format stores it exactly."""
    if not 1 <= int(bits) <= 15:
        raise InputError(f"bits must be in 1..15 for int16 storage, got {bits}")
    values = np.asarray(array, np.float64)  # float64: the division rounds once, at rint
    peak = float(np.abs(values).max(initial=0.0))
    if not np.isfinite(peak):
        raise InputError("the volume has non-finite values; it cannot be stored as scaled integers")
    scale = float(np.float32(peak / (2 ** int(bits) - 1))) if peak > 0 else 1.0
    return np.rint(values / scale).astype(np.int16), scale


def is_nifti(path: PathLike) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii``, ``.nii.gz``)."""
    return str(path).lower().endswith(_NIFTI)


def _patch_nifti(path: Path, description: Optional[str], slope: Optional[float]) -> None:
    """Write ``descrip`` and ``scl_slope`` into a NIfTI-1/2 header: ITK's writer ignores both fields."""
    compressed = str(path).lower().endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    for order in "<>":
        size = struct.unpack_from(order + "i", data, 0)[0]
        if size in (348, 540):
            break
    else:
        raise InputError(f"{path}: not a NIfTI header; cannot store its description")
    slope_at, slope_format, text_at = (112, "f", 148) if size == 348 else (176, "d", 240)
    if slope is not None:
        struct.pack_into(order + slope_format * 2, data, slope_at, slope, 0.0)  # scl_slope, scl_inter
    if description is not None:
        data[text_at:text_at + 80] = description.encode("ascii", "replace")[:79].ljust(80, b"\0")  # C string
    path.write_bytes(gzip.compress(bytes(data), compresslevel=6, mtime=0) if compressed else bytes(data))


def partial_path(path: PathLike) -> Path:
    """The temporary name a file is written under before it is renamed into place: beside it (so the rename is
    atomic), hidden, with this process's id (two writers never share one) and the same extension (the same format)."""
    path = Path(path)
    return path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")


def write_atomic(path: PathLike, data: Union[str, bytes]) -> Path:
    """``data`` (text as UTF-8, or bytes) into ``path`` through :func:`partial_path` and a rename: readers see the
    old file or the new one, never half of one. The folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        partial.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_volume(volume: Volume, path: PathLike, overwrite: bool = False,
                 metadata: Optional[Mapping[str, str]] = None, bits: Optional[int] = None) -> Path:
    """Write ``volume`` (compressed where the format allows); refuse to replace a file unless ``overwrite``.
    ``metadata``: header fields (NRRD/MHA ``key:=value``), e.g. a Slicer segmentation's segments or a
    contrast's provenance; NIfTI has no such fields and keeps only ``descrip`` (80 characters).
    ``bits``: store the values as int16 integers of that many bits and a scale (see :func:`quantize` and the
    module notes; :func:`read_volume` gives the values back within half a quantum).

    Single-file formats appear whole or not at all: written under a temporary name
    in the same folder and renamed, so a cancelled or killed run leaves no half file.
    (Detached header formats, .nhdr and .mhd, name their data file inside the header
    and are written in place.)
    """
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = dict(metadata or {})
    nifti = is_nifti(path)
    scale = None
    if bits is not None:
        array, scale = quantize(volume.array, bits)
        volume = volume.with_array(array)
        if not nifti:
            fields[SCALE_KEY] = repr(scale)  # repr: the float back exactly
    image = volume.to_image()
    for key, value in fields.items():
        image.SetMetaData(key, value)
    if str(path).lower().endswith(_DETACHED):
        sitk.WriteImage(image, str(path), useCompression=True)
        return path
    partial = partial_path(path)  # same extension: same format
    try:
        sitk.WriteImage(image, str(partial), useCompression=True)
        if nifti and (scale is not None or NIFTI_DESCRIPTION in fields):
            _patch_nifti(partial, fields.get(NIFTI_DESCRIPTION), scale)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
