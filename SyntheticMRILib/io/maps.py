"""Quantitative T1/T2/PD maps: loading, checking and unit handling.

Everything the physics layer receives has passed through :func:`prepare_maps`:
the three maps share one grid, are finite and non-negative, T1/T2 are in ms and
PD is a fraction of water, and the relaxation times look like those of tissue
(:func:`relaxation_problem`: the one plausibility rule of every command). Inputs
are copied, never modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .volumes import PathLike, Volume, read_volume

if TYPE_CHECKING:  # annotations only: torch loads on first use
    import torch

__all__ = [
    "Maps", "prepare_maps", "load_maps", "relaxation_problem", "tissue_mask", "UNITS", "MAP_NAMES", "TISSUE_PD",
    "T1_MEDIAN_MS", "T2_MEDIAN_MS", "MAX_T2_ABOVE_T1",
]

UNITS = ("ms", "s")
MAP_NAMES = ("t1", "t2", "pd")  # the maps, in the order every function takes them (and their file stems in a study)
# PD as a fraction peaks near 1 (CSF); in percent near 100.
_PERCENT_IF_PD_ABOVE = 1.5
_PD_MAX_PERCENT = 150.0

# What tissue is, for the plausibility rule: T1 > 0 and PD above 5 % of water. Air, background and the noise fits
# some mapping software leaves outside the head have (nearly) no protons; bone (PD ~0.05) is left out too.
TISSUE_PD = 0.05
# The median of a T1 or T2 map over tissue, in ms, for any tissue at 0.5-7 T. T1 grows with the field; the
# shortest of soft tissue is fat (~250-380 ms at 1.5-3 T) and brain at low field (WM ~500 ms at 0.5 T), the
# longest that of CSF / free water (~4.0-4.5 s at every field; Rooney et al., MRM 2007;57:308, 0.2-7 T). T2 of
# soft tissue runs from ~25-45 ms (muscle, liver, iron-rich deep grey matter at 7 T; WM ~45-50 ms at 7 T) to
# ~2-2.5 s (CSF; Spijkerman et al., MAGMA 2018), and T2 <= T1. The bounds leave a factor >= 2 of margin for maps
# of other organs and phantoms. Each upper bound is below 1000x its lower bound (6000 < 100 000, 4000 < 10 000),
# so maps in s never pass as ms, nor the other way round (the unit advice below relies on that).
T1_MEDIAN_MS = (100.0, 6000.0)
T2_MEDIAN_MS = (10.0, 4000.0)
# T2 <= T1 in every tissue (transverse magnetization decays at least as fast as longitudinal recovers:
# 1/T2 = 1/(2 T1) + 1/T2', and T2 approaches T1 only in free water). A map may break it in a few voxels
# (noise in both fits, single-compartment fits of partial-volume voxels at tissue/CSF borders, fit failures):
# up to 5 % of tissue voxels are tolerated. A weighted image given as a T1 map breaks it in 16-100 % of the
# voxels of the bundled sample (T1w or T2w, scaled to 0-1, 0-1000 or 0-4095), swapped maps in nearly all.
MAX_T2_ABOVE_T1 = 0.05


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
                f"{name} map is on a different grid than T1 (size {' x '.join(map(str, volume.size))} vs "
                f"{' x '.join(map(str, t1.size))} voxels (x, y, z), "
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
    pd_top = float(np.percentile(arrays["PD"][foreground], 99.9))
    if pd_top > _PD_MAX_PERCENT:
        raise InputError(f"PD reaches {pd_top:.4g}; expected a fraction of water (0-1) or percent (0-100)")
    if pd_top > _PERCENT_IF_PD_ABOVE:
        arrays["PD"] /= 100.0
        notes.append(f"PD looked like percent (99.9th percentile {pd_top:.3g}); divided by 100")
    _check_relaxation(arrays["T1"], arrays["T2"], arrays["PD"], units)
    if units == "s":
        arrays["T1"] *= 1000.0
        arrays["T2"] *= 1000.0
        notes.append("T1 and T2 converted from s to ms")
    return Maps(arrays["T1"], arrays["T2"], arrays["PD"], t1, tuple(notes))


def tissue_mask(t1: np.ndarray, pd: np.ndarray) -> np.ndarray:
    """The voxels the plausibility rule looks at: T1 > 0 and PD (a fraction) above :data:`TISSUE_PD`."""
    return (np.asarray(t1) > 0) & (np.asarray(pd) > TISSUE_PD)


class _Tissue:
    """T1 and T2 over :func:`tissue_mask`, in the units of the files, read in a chosen unit per map (``k`` ms per
    file unit: 1 for ms, 1000 for s) and either way round: medians scale with the unit, so they are computed once."""

    def __init__(self, t1: np.ndarray, t2: np.ndarray, pd: np.ndarray) -> None:
        tissue = tissue_mask(t1, pd)
        self.t1, self.t2 = np.asarray(t1)[tissue], np.asarray(t2)[tissue]
        self.voxels = int(self.t1.size)
        self.medians = (float(np.median(self.t1)), float(np.median(self.t2))) if self.voxels else (0.0, 0.0)
        self._above: dict = {}

    def t2_above_t1(self, k1: float, k2: float, swap: bool = False) -> float:
        """Fraction of tissue voxels with T2 > T1, T1 and T2 read in ``k1`` and ``k2`` ms per file unit."""
        key = (k1, k2, swap)
        if key not in self._above:
            t1, t2 = (self.t2, self.t1) if swap else (self.t1, self.t2)
            if k1 != k2:
                t1, t2 = t1.astype(np.float64) * k1, t2.astype(np.float64) * k2
            self._above[key] = float(np.mean(t2 > t1))
        return self._above[key]

    def problems(self, k1: float = 1.0, k2: float = 1.0, swap: bool = False, t1_median: Tuple[float, float] = T1_MEDIAN_MS,
                 t2_median: Tuple[float, float] = T2_MEDIAN_MS) -> List[str]:
        """Why this reading is not relaxation times of tissue (empty if it is): T1 from the T2 file when ``swap``."""
        m1, m2 = self.medians[::-1] if swap else self.medians
        out = []
        for name, median, (low, high) in (("T1", m1 * k1, t1_median), ("T2", m2 * k2, t2_median)):
            if not low <= median <= high:
                out.append(f"median {name} {median:.3g} ms is outside {low:g}-{high:g} ms")
        above = self.t2_above_t1(k1, k2, swap)
        if above > MAX_T2_ABOVE_T1:
            out.append(f"T2 exceeds T1 in {100 * above:.0f} % of tissue voxels (T2 <= T1 in any tissue; "
                       f"{100 * MAX_T2_ABOVE_T1:.0f} % tolerated)")
        return out


def relaxation_problem(t1: np.ndarray, t2: np.ndarray, pd: np.ndarray, t1_median: Tuple[float, float] = T1_MEDIAN_MS,
                       t2_median: Tuple[float, float] = T2_MEDIAN_MS) -> Optional[str]:
    """Why T1 and T2 (ms) do not look like relaxation times of tissue, or ``None`` when they do.

    The one plausibility rule of the package: over :func:`tissue_mask` (PD a fraction), the median T1 and T2
    lie in ``t1_median`` and ``t2_median`` (default: any tissue at 0.5-7 T, :data:`T1_MEDIAN_MS`,
    :data:`T2_MEDIAN_MS`; the segmenter passes those of a brain) and T2 <= T1 in all but
    :data:`MAX_T2_ABOVE_T1` of the voxels.
    """
    tissue = _Tissue(t1, t2, pd)
    if tissue.voxels == 0:
        return f"no tissue: no voxel has T1 > 0 and PD above {TISSUE_PD:g}"
    problems = tissue.problems(t1_median=t1_median, t2_median=t2_median)
    return "; ".join(problems) if problems else None


_MS_PER = {"ms": 1.0, "s": 1000.0}


def _check_relaxation(t1: np.ndarray, t2: np.ndarray, pd: np.ndarray, units: str) -> None:
    """Raise :class:`InputError` unless T1 and T2, in ``units``, look like relaxation times; say what they look like.

    Other readings of the files are tried only to say what went wrong: the other unit (the advice ``--units s``,
    or that the maps are in ms already, is given only when the maps then pass the rule), T1 and T2 swapped, and
    the two maps in different units. When no reading passes, the files do not look like T1/T2 maps in ms or s:
    a weighted image given as a map, most likely.
    """
    tissue = _Tissue(t1, t2, pd)
    if tissue.voxels == 0:
        raise InputError(f"PD map has no tissue: no voxel has PD above {TISSUE_PD:g} where T1 > 0; is it a PD map "
                         "(a fraction of water, or percent)?")
    other = "s" if units == "ms" else "ms"
    k, k_other = _MS_PER[units], _MS_PER[other]
    problems = tissue.problems(k, k)
    if not problems:
        return
    m1, m2 = tissue.medians
    if not tissue.problems(k_other, k_other):
        if units == "ms":
            raise InputError(f"T1 median is {m1:.3g}, which looks like seconds; pass --units s to convert to ms")
        raise InputError(f"--units s given, but the T1 median is {m1:.4g}, which looks like ms already")
    for unit in (units, other):
        if not tissue.problems(_MS_PER[unit], _MS_PER[unit], swap=True):
            raise InputError(
                f"T1 and T2 look swapped: median T1 {m1 * _MS_PER[unit]:.3g} ms, T2 {m2 * _MS_PER[unit]:.3g} ms, and T2 "
                f"exceeds T1 in {100 * tissue.t2_above_t1(1.0, 1.0):.0f} % of tissue voxels (T2 <= T1 in any tissue); "
                "pass the T1 map as T1 and the T2 map as T2" + (f", with --units {unit}" if unit != units else ""))
    for u1, u2 in ((units, other), (other, units)):
        if not tissue.problems(_MS_PER[u1], _MS_PER[u2]):
            raise InputError(f"T1 looks like {u1} (median {m1:.3g}) but T2 like {u2} (median {m2:.3g}): give both maps "
                             "in one unit (--units applies to both)")
    bad = [name for name, median, (low, high) in (("T1", m1 * k, T1_MEDIAN_MS), ("T2", m2 * k, T2_MEDIAN_MS))
           if not low <= median <= high]
    if len(bad) == 1:
        name, partner = bad[0], ("T2" if bad[0] == "T1" else "T1")
        what = (f"the {name} file does not look like a {name} map in ms or s (with the {partner} map in {units}; "
                "a weighted image?)")
    elif bad:
        what = "the T1 and T2 files do not look like T1 and T2 maps in ms or s (weighted images?)"
    else:
        what = "the T1 and T2 files do not look like T1 and T2 maps of one tissue (is one a weighted image?)"
    raise InputError(f"{'; '.join(problems)} (read in {units}, over {tissue.voxels} tissue voxels): {what}")


def load_maps(t1: PathLike, t2: PathLike, pd: PathLike, units: str = "ms") -> Maps:
    """Read and check three map files (see :func:`prepare_maps`)."""
    return prepare_maps(read_volume(t1), read_volume(t2), read_volume(pd), units)
