"""The classical baseline: a per-voxel fit of T1, T2 and PD to the three routine series through the physics
layer, what a physicist would do without deep learning.

Each series' receiver gain is unknown; it is calibrated on a reference tissue (white matter by default):
the gain makes the series' median over the reference voxels equal the signal the physics layer gives for
that tissue's literature T1/T2/PD. Then, per voxel, three gain-corrected intensities meet three unknowns.
PD only scales the signal, so the fit is a dictionary match on the direction of the three-vector (as in MR
fingerprinting): a coarse log-spaced T1 x T2 dictionary, then a finer one around the best entry; PD is the
least-squares scale. T2 <= T1 throughout.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Tuple

import numpy as np
import torch

from ..physics.protocols import Protocol
from ..physics.routine import SERIES
from ..physics.synthesis import synthesize
from ..physics.tissues import relaxation

__all__ = ["calibrate_gains", "fit_maps"]

_T1_MS, _T2_MS = (100.0, 6000.0), (10.0, 3000.0)
_COARSE, _FINE = 64, 7


def _signals(t1: torch.Tensor, t2: torch.Tensor, protocols: Mapping[str, Protocol]) -> torch.Tensor:
    """``[..., 3]`` PD-1 signals of the three series."""
    pd = torch.ones_like(t1)
    return torch.stack([synthesize(t1, t2, pd, protocols[s]) for s in SERIES], dim=-1)


def calibrate_gains(images: np.ndarray, reference: np.ndarray, protocols: Mapping[str, Protocol],
                    tissue: str = "cerebral_wm", field: float = 3.0) -> np.ndarray:
    """Per series, the gain that maps the literature ``tissue`` (at ``field`` T) onto the median of ``images[s]``
    over the ``reference`` mask."""
    row = relaxation(tissue, field)
    expected = _signals(torch.tensor([row.t1], dtype=torch.float32), torch.tensor([row.t2], dtype=torch.float32),
                        protocols)[0].numpy() * row.pd
    measured = np.array([np.median(image[reference]) for image in images])
    return measured / expected


def _match(y: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, protocols: Mapping[str, Protocol]) -> Tuple[torch.Tensor, ...]:
    """Best (T1, T2, PD) per row of ``y`` ``[N, 3]`` among candidates ``t1``, ``t2`` ``[N or 1, M]``."""
    d = _signals(t1, t2, protocols)  # [N or 1, M, 3]
    norm = (d * d).sum(-1).clamp(min=1e-12)
    dot = torch.einsum("nk,mk->nm", y, d[0]) if d.shape[0] == 1 else torch.einsum("nk,nmk->nm", y, d)
    best = torch.argmax(dot.clamp(min=0) ** 2 / norm, dim=1)
    pick = lambda a: a.expand(len(y), -1).gather(1, best[:, None])[:, 0]  # noqa: E731
    return pick(t1), pick(t2), (dot.gather(1, best[:, None]) / norm.expand(len(y), -1).gather(1, best[:, None]))[:, 0]


def fit_maps(images: np.ndarray, mask: np.ndarray, protocols: Mapping[str, Protocol], gains: Sequence[float],
             chunk: int = 2048) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2 (ms) and PD (fraction, at most 1) per voxel of ``mask`` from ``images`` ``[3, ...]``; 0 elsewhere."""
    y_all = torch.from_numpy(np.asarray(images, np.float32)[:, mask].T / np.asarray(gains, np.float32))
    t1g, t2g = torch.meshgrid(torch.logspace(np.log10(_T1_MS[0]), np.log10(_T1_MS[1]), _COARSE, dtype=torch.float32),
                              torch.logspace(np.log10(_T2_MS[0]), np.log10(_T2_MS[1]), _COARSE, dtype=torch.float32),
                              indexing="ij")
    keep = t2g <= t1g
    coarse = (t1g[keep][None], t2g[keep][None])
    step1 = np.log(_T1_MS[1] / _T1_MS[0]) / (_COARSE - 1)
    step2 = np.log(_T2_MS[1] / _T2_MS[0]) / (_COARSE - 1)
    offsets = torch.linspace(-1, 1, _FINE, dtype=torch.float32)
    o1, o2 = torch.meshgrid(offsets * step1, offsets * step2, indexing="ij")
    out = np.zeros((3, len(y_all)), np.float32)
    with torch.no_grad():
        for start in range(0, len(y_all), chunk):
            y = y_all[start:start + chunk]
            t1, t2, _ = _match(y, *coarse, protocols)
            fine_t1 = t1[:, None] * torch.exp(o1.flatten())[None]
            fine_t2 = torch.minimum(t2[:, None] * torch.exp(o2.flatten())[None], fine_t1)
            t1, t2, pd = _match(y, fine_t1, fine_t2, protocols)
            out[:, start:start + chunk] = torch.stack([t1, t2, pd.clamp(0, 1)]).numpy()
    maps = np.zeros((3,) + mask.shape, np.float32)
    maps[:, mask] = out
    return maps[0], maps[1], maps[2]
