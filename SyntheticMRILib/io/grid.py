"""The grid the 2-D networks work on (1 mm, axes along LPS, axial slices) and the moves to it and back."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from .volumes import Volume

__all__ = ["MODEL_SPACING_MM", "physical_extent", "model_grid", "resample", "pad_to"]

MODEL_SPACING_MM = 1.0
_LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def physical_extent(grid: Volume) -> Tuple[np.ndarray, np.ndarray]:
    """The LPS box (mm) that ``grid``'s voxels cover, corners of the outer voxels included: (low, high)."""
    shape = grid.array.shape[::-1]
    matrix = np.asarray(grid.direction).reshape(3, 3) * np.asarray(grid.spacing)
    corners = np.array([[a, b, c] for a in (-0.5, shape[0] - 0.5) for b in (-0.5, shape[1] - 0.5) for c in (-0.5, shape[2] - 0.5)])
    points = corners @ matrix.T + np.asarray(grid.origin)
    return points.min(0), points.max(0)


def model_grid(grid: Volume) -> Optional[Volume]:
    """The 1 mm LPS-aligned grid covering ``grid``, or ``None`` when ``grid`` already is one (no resampling)."""
    if np.allclose(grid.direction, _LPS, atol=1e-6) and np.allclose(grid.spacing, MODEL_SPACING_MM, atol=1e-3):
        return None
    low, high = physical_extent(grid)
    size = np.maximum(1, np.ceil((high - low) / MODEL_SPACING_MM - 1e-6)).astype(int)
    origin = low + MODEL_SPACING_MM / 2
    return Volume(np.zeros(size[::-1], np.uint8), (MODEL_SPACING_MM,) * 3, tuple(origin.tolist()), _LPS)


def resample(volume: Volume, reference: Volume, interpolator: int = sitk.sitkLinear) -> np.ndarray:
    """``volume``'s array on ``reference``'s grid (0 outside ``volume``), in ``volume``'s pixel type."""
    image = sitk.Resample(volume.to_image(), reference.to_image(), sitk.Transform(), interpolator, 0.0,
                          volume.to_image().GetPixelID())
    return sitk.GetArrayFromImage(image)


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last two axes up to multiples of ``multiple`` (bottom and right; cropped off after)."""
    h, w = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))
