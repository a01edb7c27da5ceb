"""How close estimated T1/T2/PD maps are to the truth: the figures of the map estimator's table.

* PSNR over the brain mask (intracranial tissue and CSF), the data range being the reference map's maximum
  over the mask;
* SSIM (MONAI's Gaussian-window SSIM, sigma 1.5, 11 pixels, same data range) per axial slice, its map
  averaged over the brain mask;
* MAPE over parenchyma (grey, white and deep grey matter, brainstem);
* per-tissue mean signed error (% of the true tissue mean) and, on lesion subjects, that of the lesion ROI.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from ..phantoms.head import ADIPOSE, DIPLOE, HEAD_TISSUE, MUSCLE, SKIN, SKULL

__all__ = ["brain_mask", "parenchyma_mask", "TISSUE_GROUPS", "psnr", "ssim", "map_scores"]

_OUTSIDE_BRAIN = (0, SKULL, DIPLOE, MUSCLE, ADIPOSE, SKIN)
TISSUE_GROUPS: Dict[str, Sequence[str]] = {
    "wm": ("cerebral_wm", "cerebellum_wm"),
    "gm": ("cortex", "cerebellum_cortex"),
    "deep_gm": ("thalamus", "caudate", "putamen", "pallidum", "accumbens", "hippocampus", "amygdala", "ventral_dc"),
    "csf": ("csf",),
}
_PARENCHYMA = TISSUE_GROUPS["wm"] + TISSUE_GROUPS["gm"] + TISSUE_GROUPS["deep_gm"] + ("brainstem", "wm_hypointensity")
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5


def _labels_of(tissues: Sequence[str]) -> np.ndarray:
    return np.array([label for label, tissue in HEAD_TISSUE.items() if tissue in tissues])


def brain_mask(labels: np.ndarray) -> np.ndarray:
    """Intracranial tissue and CSF: every label but background, bone, marrow, muscle, fat and skin."""
    return ~np.isin(labels, _OUTSIDE_BRAIN)


def parenchyma_mask(labels: np.ndarray) -> np.ndarray:
    return np.isin(labels, _labels_of(_PARENCHYMA))


def psnr(predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    peak = float(truth[mask].max())
    mse = float(np.mean((predicted[mask].astype(np.float64) - truth[mask]) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def ssim(predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean over ``mask`` of the SSIM maps of the axial slices (``[k, j, i]`` arrays) that hold mask voxels."""
    from monai.metrics.regression import compute_ssim_and_cs

    keep = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(1))
    peak = float(truth[mask].max())
    x = torch.from_numpy(np.ascontiguousarray(predicted[keep], np.float32))[:, None]
    y = torch.from_numpy(np.ascontiguousarray(truth[keep], np.float32))[:, None]
    values = compute_ssim_and_cs(x, y, 2, [_SSIM_WINDOW] * 2, [_SSIM_SIGMA] * 2, data_range=peak)[0][:, 0].numpy()
    half = _SSIM_WINDOW // 2
    inner = mask[keep][:, half:-half, half:-half]  # the valid part of the convolution
    return float(values[inner].mean())


def map_scores(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray], labels: np.ndarray,
               lesions: Optional[np.ndarray] = None) -> Dict[str, Dict[str, float]]:
    """Per map (``t1``, ``t2``, ``pd``): ``psnr``, ``ssim``, ``mape`` and ``err_<group>`` (signed % error of each
    tissue group's mean), and ``err_lesion`` when ``lesions`` marks any voxel."""
    brain, parenchyma = brain_mask(labels), parenchyma_mask(labels)
    groups = {name: np.isin(labels, _labels_of(tissues)) for name, tissues in TISSUE_GROUPS.items()}
    if lesions is not None and lesions.any():
        groups["lesion"] = lesions.astype(bool)
        for name in TISSUE_GROUPS:
            groups[name] &= ~groups["lesion"]
    out = {}
    for name, p, t in zip(("t1", "t2", "pd"), predicted, truth):
        row = {"psnr": psnr(p, t, brain), "ssim": ssim(p, t, brain),
               "mape": float(100 * np.mean(np.abs(p[parenchyma] - t[parenchyma]) / t[parenchyma]))}
        for group, where in groups.items():
            if where.any():
                row[f"err_{group}"] = float(100 * (p[where].mean() / t[where].mean() - 1))
        out[name] = row
    return out


def mean_scores(rows: Sequence[Mapping[str, Mapping[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Mean over subjects of :func:`map_scores` rows (a key missing from a row is left out of its mean)."""
    out: Dict[str, Dict[str, float]] = {}
    for name in ("t1", "t2", "pd"):
        keys = sorted({k for r in rows for k in r[name]})
        out[name] = {k: float(np.mean([r[name][k] for r in rows if k in r[name]])) for k in keys}
    return out
