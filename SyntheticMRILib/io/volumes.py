"""Volumes on disk with their exact geometry (NRRD, NIfTI, MHA through SimpleITK).

A :class:`Volume` is an array plus the grid it lives on, in ITK conventions:
the array is indexed ``[k, j, i]`` (slowest axis first) and spacing, origin and
direction are in LPS, as written on disk. Nothing here resamples: a volume
written back lands on exactly the grid it was read from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

__all__ = ["Volume", "read_volume", "write_volume", "check_output", "check_output_file", "check_output_folder", "EXTENSIONS"]

EXTENSIONS = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
PARTIAL_PREFIX = ".partial-"  # the temporary name of a file being written (see write_volume)
_DETACHED = (".nhdr", ".mhd")
PathLike = Union[str, os.PathLike]


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
            raise InputError(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return replace(self, array=array)

    def same_grid(self, other: "Volume", tolerance: float = 1e-4) -> bool:
        """True when both volumes have the same shape, spacing, origin and direction."""
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, rtol=0, atol=tolerance)
            and np.allclose(self.origin, other.origin, rtol=0, atol=tolerance)
            and np.allclose(self.direction, other.direction, rtol=0, atol=tolerance)
        )

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
    return Volume.from_image(image)


def check_output_file(path: PathLike, overwrite: bool = False, need_folder: bool = False) -> Path:
    """The one rule for an output file of any kind: raise :class:`InputError` if ``path`` exists (unless
    ``overwrite``) or, with ``need_folder``, if its folder is missing (writers that do not create it)."""
    path = Path(path)
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


def check_output(path: PathLike, overwrite: bool = False) -> Path:
    """Raise :class:`InputError` unless ``path`` is a writable volume type and free (or ``overwrite``).

    Callers run it before any work too, so that a refused output costs nothing.
    """
    path = Path(path)
    _check_extension(path)
    return check_output_file(path, overwrite)


def write_volume(volume: Volume, path: PathLike, overwrite: bool = False,
                 metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``volume`` (compressed where the format allows); refuse to replace a file unless ``overwrite``.
    ``metadata``: header fields (NRRD ``key:=value``), e.g. a Slicer segmentation's segments.

    Single-file formats appear whole or not at all: written under a temporary name
    in the same folder and renamed, so a cancelled or killed run leaves no half file.
    (Detached header formats, .nhdr and .mhd, name their data file inside the header
    and are written in place.)
    """
    path = check_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = volume.to_image()
    for key, value in (metadata or {}).items():
        image.SetMetaData(key, value)
    if str(path).lower().endswith(_DETACHED):
        sitk.WriteImage(image, str(path), useCompression=True)
        return path
    partial = path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{path.name}")  # same extension: same format
    try:
        sitk.WriteImage(image, str(partial), useCompression=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
