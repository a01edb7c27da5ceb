"""Quantitative T1/T2/PD maps: loading, checking and unit handling.

Everything the physics layer receives has passed through :func:`prepare_maps`:
the three maps share one grid, are finite and non-negative, T1/T2 are in ms and
PD is a fraction of water. Inputs are copied, never modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Tuple

import numpy as np

from ..errors import InputError
from .volumes import PathLike, Volume, read_volume

if TYPE_CHECKING:  # annotations only: torch loads on first use
    import torch

__all__ = ["Maps", "prepare_maps", "load_maps", "UNITS", "MAP_NAMES"]

UNITS = ("ms", "s")
MAP_NAMES = ("t1", "t2", "pd")  # the maps, in the order every function takes them (and their file stems in a study)
# A brain T1 map in ms has a median far above this (WM ~ 600-1100 ms); in seconds, far below.
_SECONDS_IF_MEDIAN_T1_BELOW = 10.0
# PD as a fraction peaks near 1 (CSF); in percent near 100.
_PERCENT_IF_PD_ABOVE = 1.5
_PD_MAX_PERCENT = 150.0


@dataclass(frozen=True)
class Maps:
    """T1 and T2 in ms and PD as a fraction, float32, on the grid of ``grid``."""

    t1: np.ndarray
    t2: np.ndarray
    pd: np.ndarray
    grid: Volume
    notes: Tuple[str, ...] = ()

    def tensors(self, device="cpu", dtype=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T1, T2 and PD as torch tensors (float32 unless ``dtype``) on ``device``."""
        import torch  # here, not at import: the GUI reads UNITS before PyTorch is installed

        return tuple(torch.as_tensor(m).to(device=device, dtype=dtype or torch.float32) for m in (self.t1, self.t2, self.pd))

    def volume(self, array: np.ndarray) -> Volume:
        """``array`` on the maps' grid."""
        return self.grid.with_array(array)


def prepare_maps(t1: Volume, t2: Volume, pd: Volume, units: str = "ms") -> Maps:
    """Check three map volumes and bring them to ms / fraction; raise :class:`InputError` if they are unusable.

    ``units="s"`` converts T1 and T2 given in seconds. Maps that look like seconds
    while ``units="ms"`` are refused (a silent 1000x error would make every contrast
    wrong). PD in percent is detected and scaled to a fraction; ``notes`` says so.
    """
    if units not in UNITS:
        raise InputError(f"unknown units {units!r}; use 'ms' or 's'")
    named = {"T1": t1, "T2": t2, "PD": pd}
    for name, volume in named.items():
        if volume.array.ndim != 3:
            raise InputError(f"{name} map is {volume.array.ndim}-D; expected a 3-D volume")
        if not t1.same_grid(volume):
            raise InputError(
                f"{name} map is on a different grid than T1 (shape {volume.array.shape} vs {t1.array.shape}, "
                f"spacing {np.round(volume.spacing, 4).tolist()} vs {np.round(t1.spacing, 4).tolist()}, "
                "origin/direction compared too); resample the maps onto one grid first"
            )
    arrays = {name: np.array(volume.array, dtype=np.float32) for name, volume in named.items()}  # copies
    for name, array in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(f"{name} map has {bad} NaN or infinite voxels; mask or fill them first")
        negative = int(np.count_nonzero(array < 0))
        if negative:
            raise InputError(f"{name} map has {negative} negative voxels (min {array.min():g}); relaxation times and PD must be >= 0")
    foreground = arrays["T1"] > 0
    if not foreground.any():
        raise InputError("T1 map is zero everywhere; nothing to synthesize")
    notes: List[str] = []
    median_t1 = float(np.median(arrays["T1"][foreground]))
    looks_like_seconds = median_t1 < _SECONDS_IF_MEDIAN_T1_BELOW
    if units == "ms" and looks_like_seconds:
        raise InputError(f"T1 median is {median_t1:.3g}, which looks like seconds; pass --units s to convert to ms")
    if units == "s":
        if not looks_like_seconds:
            raise InputError(f"--units s given, but the T1 median is {median_t1:.4g}, which looks like ms already")
        arrays["T1"] *= 1000.0
        arrays["T2"] *= 1000.0
        notes.append("T1 and T2 converted from s to ms")
    pd_top = float(np.percentile(arrays["PD"][foreground], 99.9))
    if pd_top > _PD_MAX_PERCENT:
        raise InputError(f"PD reaches {pd_top:.4g}; expected a fraction of water (0-1) or percent (0-100)")
    if pd_top > _PERCENT_IF_PD_ABOVE:
        arrays["PD"] /= 100.0
        notes.append(f"PD looked like percent (99.9th percentile {pd_top:.3g}); divided by 100")
    return Maps(arrays["T1"], arrays["T2"], arrays["PD"], t1, tuple(notes))


def load_maps(t1: PathLike, t2: PathLike, pd: PathLike, units: str = "ms") -> Maps:
    """Read and check three map files (see :func:`prepare_maps`)."""
    return prepare_maps(read_volume(t1), read_volume(t2), read_volume(pd), units)
