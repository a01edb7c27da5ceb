"""Routine weighted series (T1w, T2w, FLAIR) as the map estimator takes them: files, protocols, one grid.

Each series' TR/TE/TI come from the command line or from a BIDS JSON sidecar (``RepetitionTime``,
``EchoTime``, ``InversionTime``, in seconds) beside the image (same name, ``.json``) or named explicitly;
command-line values win. The series are assumed co-registered (same patient position, as the series of one
session are): those on another grid are resampled (linear) onto the T1w's grid, and refused when their
physical extents do not overlap. Refused with a one-line error: a missing file or parameter, a 2-D or 4-D
image, NaN, an impossible protocol (TE >= TR, TI >= TR, times in seconds), and a series that shows fluid as a
map does (a T1 or T2 map given for a T1w or FLAIR, where fluid must be dark).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..physics.protocols import Protocol
from ..physics.routine import RANGES_MS, SERIES, series_protocols
from .grid import physical_extent, resample
from .volumes import EXTENSIONS, PathLike, Volume, read_volume

__all__ = ["RoutineSeries", "head_mask", "sidecar_path", "read_json", "read_sidecar", "check_image", "tissue_ratio",
           "load_series", "SIDECAR_KEYS"]

SIDECAR_KEYS = {"tr": "RepetitionTime", "te": "EchoTime", "ti": "InversionTime"}  # BIDS, seconds
_MIN_OVERLAP = 0.5  # share of the T1w's extent (per axis) another series must cover
_FLUID_SHARE = 0.03  # the brightest share of the T2w's head voxels: fluid (CSF, vitreous)
_FLUID_BRIGHT = 1.3  # fluid this much above the head's mean on a T1w or FLAIR: not that contrast ...
_FLUID_MARGIN = 2.0  # ... unless the protocol itself makes fluid bright, up to this factor over CSF / white matter,
_FLUID_TOP = 0.1  # ... and, on a FLAIR, only when less than this share of the head is brighter (a map: 4-6 %)
_HEAD_FRACTION = 0.1  # a voxel is in the head when some series exceeds this share of its 99th percentile


@dataclass(frozen=True)
class RoutineSeries:
    """The three series on the T1w's grid (float32), their protocols, and what was done to bring them there."""

    images: Tuple[Volume, Volume, Volume]
    protocols: Dict[str, Protocol]
    notes: Tuple[str, ...] = ()
    coverage: Optional[np.ndarray] = None  # where every series has data (None: everywhere)

    def stack(self) -> np.ndarray:
        return np.stack([v.array for v in self.images])


def sidecar_path(image: PathLike) -> Path:
    """``scan.nii.gz`` -> ``scan.json`` (BIDS naming)."""
    image = Path(image)
    name = image.name
    for extension in sorted(EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(extension):
            return image.with_name(name[: -len(extension)] + ".json")
    return image.with_suffix(".json")


def read_json(path: PathLike) -> Dict[str, object]:
    """A sidecar's content (a JSON object), or a one-line error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable JSON sidecar ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON sidecar (an object of BIDS keys)")
    return data


def read_sidecar(path: PathLike, names: Iterable[str], skip: Iterable[str] = ()) -> Dict[str, float]:
    """TR/TE/TI (ms) of a BIDS sidecar, those of ``names`` only; those it lacks, and those in ``skip`` (given on
    the command line, which wins), are left out."""
    path = Path(path)
    data = read_json(path)
    names = set(names)
    out = {}
    for name, key in SIDECAR_KEYS.items():
        if key not in data or name not in names or name in skip:
            continue
        value = data[key]
        if isinstance(value, list):  # multi-echo sidecars list echo times; these series have one
            value = value[0] if len(value) == 1 else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InputError(f"{path}: {key} must be one number (seconds), got {data[key]!r}")
        if value > 30:
            raise InputError(f"{path}: {key} {value:g} looks like milliseconds; BIDS sidecars give seconds")
        out[name] = float(value) * 1000.0
    return out


def check_image(volume: Volume, path: Path, series: str) -> None:
    """A 3-D magnitude image with signal and no NaN, or a one-line error naming ``series``."""
    if min(volume.array.shape) < 2:
        raise InputError(f"{series} {path}: a single slice ({'x'.join(map(str, volume.size))} voxels); a 3-D "
                         "volume is needed")
    bad = int(np.count_nonzero(~np.isfinite(volume.array)))
    if bad:
        raise InputError(f"{series} {path}: {bad} NaN or infinite voxels; mask or fill them first")
    if float(np.max(volume.array)) <= 0:
        raise InputError(f"{series} {path}: no signal (every voxel <= 0)")


def _onto(volume: Volume, grid: Volume, series: str) -> Tuple[Volume, np.ndarray]:
    """``volume`` resampled onto ``grid``, and where on ``grid`` it has data."""
    low, high = physical_extent(grid)
    other_low, other_high = physical_extent(volume)
    covered = (np.minimum(high, other_high) - np.maximum(low, other_low)) / (high - low)
    if np.any(covered < _MIN_OVERLAP):
        raise InputError(f"{series} does not overlap the T1w (covers {100 * max(0.0, float(covered.min())):.0f} % of its "
                         "extent along one axis); the series must be co-registered scans of one head")
    inside = resample(volume.with_array(np.ones(volume.array.shape, np.float32)), grid) > 0.5
    return grid.with_array(resample(volume.with_array(np.asarray(volume.array, np.float32)), grid)), inside


def head_mask(images: np.ndarray) -> np.ndarray:
    """Voxels where some series ``images[s]`` exceeds a tenth of its 99th percentile: the head, CSF included
    (bright on T2w), air and most bone left out. The same rule in training and inference."""
    images = np.asarray(images, dtype=np.float32)
    tops = np.percentile(images.reshape(len(images), -1), 99, axis=1)
    return np.any(images > (_HEAD_FRACTION * tops).reshape((-1,) + (1,) * (images.ndim - 1)), axis=0)


def tissue_ratio(protocol: Protocol, tissues: Iterable[str] = ("csf",)) -> float:
    """The brightest of ``tissues`` over white matter at ``protocol`` (the larger at 1.5 and 3 T): how bright
    they may be on a scan of that protocol."""
    import torch

    from ..physics.synthesis import synthesize
    from ..physics.tissues import FIELD_STRENGTHS, relaxation

    def signal(tissue: str, field: float) -> float:
        r = relaxation(tissue, field)
        return float(synthesize(*(torch.tensor([float(v)], dtype=torch.float64) for v in (r.t1, r.t2, r.pd)), protocol))

    return max(signal(t, f) / signal("cerebral_wm", f) for f in FIELD_STRENGTHS for t in tissues)


def _check_contrast(images: np.ndarray, head: np.ndarray, protocols: Mapping[str, Protocol]) -> None:
    """Fluid (the T2w's brightest head voxels) must be no brighter on the T1w and the FLAIR than their protocols
    let it be (a FLAIR at a long TE and a TI past the null shows fluid at ~2x white matter); on a T1 or T2 map it
    is the brightest tissue by far. ``head``: :func:`head_mask` of ``images``."""
    t2w = images[1][head]
    fluid = t2w >= np.quantile(t2w, 1 - _FLUID_SHARE)
    for n, (name, what) in ((0, ("t1w", "T1-weighted")), (2, ("flair", "FLAIR"))):
        values = images[n][head]
        level = values[fluid].mean()
        ratio = float(level / max(values.mean(), 1e-12))
        # a FLAIR's fluid may be bright (TI past the null), but only on a map is it (nearly) the brightest tissue
        brightest = name == "t1w" or float(np.mean(values > level)) < _FLUID_TOP
        if brightest and ratio > max(_FLUID_BRIGHT, _FLUID_MARGIN * tissue_ratio(protocols[name])):
            raise InputError(f"{name}: fluid is bright ({ratio:.1f}x the head's mean where the T2w is brightest), more "
                             f"than a {what} series at its TR/TE/TI shows it: is this a T1 or T2 map, or another contrast?")
    # T1w and FLAIR both show fluid dark; the FLAIR, T2-weighted, follows the T2w elsewhere and the T1w does not
    # (rank correlation over the head without fluid: 0.25-0.96 vs -0.08-0.38 over phantoms, the sample, 1.5 and 3 T
    # and random protocols, the FLAIR always the higher by >= 0.2)
    rest = ~fluid
    follows = [_rank_correlation(images[n][head][rest], t2w[rest]) for n in (0, 2)]
    if follows[0] > follows[1]:
        raise InputError(f"t1w and flair look swapped: the t1w follows the T2w more closely than the flair does "
                         f"(rank correlation {follows[0]:.2f} vs {follows[1]:.2f})")


def _rank_correlation(a: np.ndarray, b: np.ndarray, at_most: int = 200_000) -> float:
    """Spearman's correlation of two samples (every k-th value when longer than ``at_most``)."""
    step = max(1, len(a) // at_most)
    ranks = [np.argsort(np.argsort(x[::step])) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def load_series(paths: Mapping[str, PathLike], values: Mapping[str, Mapping[str, Optional[float]]],
                sidecars: Optional[Mapping[str, Optional[PathLike]]] = None) -> RoutineSeries:
    """Read and check the three series (``paths`` by ``t1w``/``t2w``/``flair``); ``values``: the command line's
    TR/TE/TI (ms, ``None`` = not given), which win over the sidecars (``sidecars[s]``, else beside the image)."""
    sidecars = dict(sidecars or {})
    volumes, merged, notes = [], {}, []
    for series in SERIES:
        path = Path(paths[series])
        given = {k: v for k, v in values.get(series, {}).items() if v is not None}
        sidecar = Path(sidecars[series]) if sidecars.get(series) else sidecar_path(path)
        if sidecars.get(series) and not sidecar.is_file():
            raise InputError(f"{series}: {sidecar}: no such sidecar")
        from_file = read_sidecar(sidecar, RANGES_MS[series], skip=given) if sidecar.is_file() else {}
        merged[series] = {**from_file, **given}
        if from_file:
            notes.append(f"{series}: {', '.join(k.upper() for k in sorted(from_file))} from {sidecar.name}")
        volume = read_volume(path)
        check_image(volume, path, series)
        volumes.append((volume, path))
    protocols = series_protocols(merged)  # every parameter check before any resampling
    grid = volumes[0][0]
    images = [grid.with_array(np.asarray(grid.array, np.float32))]
    coverage = np.ones(grid.array.shape, bool)
    for series, (volume, _) in zip(SERIES[1:], volumes[1:]):
        if volume.same_grid(grid):
            images.append(volume.with_array(np.asarray(volume.array, np.float32)))
            continue
        image, inside = _onto(volume, grid, series)
        images.append(image)
        coverage &= inside
        notes.append(f"{series} resampled onto the T1w grid (assumed co-registered)")
    stacked = np.clip(np.stack([v.array for v in images]), 0, None)  # magnitude: interpolation may dip below 0
    head = head_mask(stacked)
    _check_contrast(stacked, head, protocols)
    lost = float(np.mean(~coverage[head]))
    if lost > 0:
        notes.append(f"{100 * lost:.1f} % of the T1w's head lies outside the T2w or FLAIR: the maps are 0 there")
    return RoutineSeries(tuple(grid.with_array(a) for a in stacked), protocols, tuple(notes),  # type: ignore[arg-type]
                         None if coverage.all() else coverage)
