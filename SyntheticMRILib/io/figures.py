"""Pictures of results: the contrast montage (axial, coronal, sagittal per contrast).

Views follow radiological convention whatever the input's orientation: each
volume is first reoriented to LPS axes (a permutation and flips, no resampling),
then axial slices show the patient's right on the image's left and anterior up,
coronal and sagittal show superior up, and the pixel aspect follows the spacing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .volumes import Volume

__all__ = ["Panel", "orthogonal_views", "save_montage"]


@dataclass(frozen=True)
class Panel:
    """One contrast of the montage: its title, a caption (e.g. TR/TE/TI) and the volume."""

    title: str
    caption: str
    volume: Volume
    signed: bool = False  # symmetric grey scale around 0 (PSIR, dSIR)
    overlay: Optional[Volume] = None  # a FreeSurfer-numbered label map drawn in its colors over the image


def _overlay_rgba(labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    from .labels import label_entry

    rgba = np.zeros(labels.shape + (4,), np.float32)
    for value in np.unique(labels):
        if value != 0:
            rgba[labels == value] = [*(c / 255 for c in label_entry(int(value)).color), alpha]
    return rgba


def orthogonal_views(volume: Volume, center_lps: Optional[Sequence[float]] = None) -> List[Tuple[np.ndarray, float]]:
    """Axial, coronal and sagittal slices through ``center_lps`` (mm; default the volume centre).

    Returns ``(image, aspect)`` pairs ready for ``imshow(image, aspect=aspect)``.
    """
    image = sitk.DICOMOrient(volume.to_image(), "LPS")  # array axes become [S, P, L]
    array = sitk.GetArrayViewFromImage(image)
    sx, sy, sz = image.GetSpacing()
    if center_lps is None:
        k, j, i = (n // 2 for n in array.shape)
    else:
        index = image.TransformPhysicalPointToContinuousIndex([float(c) for c in center_lps])
        i, j, k = (int(np.clip(round(v), 0, n - 1)) for v, n in zip(index, array.shape[::-1]))
    return [
        (np.array(array[k]), sy / sx),  # rows anterior→posterior, columns right→left
        (np.array(array[::-1, j, :]), sz / sx),  # superior up
        (np.array(array[::-1, :, i]), sz / sy),  # superior up, anterior on the left
    ]


def _window(values: np.ndarray, signed: bool) -> Tuple[float, float]:
    """Grey-scale limits from robust percentiles of ``values`` (0.5-99.5 %, symmetric if signed)."""
    inside = values[values != 0]
    if inside.size == 0:
        return -1.0, 1.0
    if signed:
        top = float(np.percentile(np.abs(inside), 99.5)) or 1.0
        return -top, top
    low, high = np.percentile(inside, [0.5, 99.5])
    return float(min(low, 0.0)), float(high if high > low else low + 1)


def save_montage(
    panels: Sequence[Panel],
    path: Path,
    columns: int = 4,
    center_lps: Optional[Sequence[float]] = None,
    title: str = "",
    window_mask: Optional[Volume] = None,
) -> Path:
    """Write a PNG: one tile per panel, each tile the three orthogonal views with title and caption.

    Grey levels are windowed on the voxels where ``window_mask`` is non-zero (e.g.
    the brain, so that bright scalp fat does not flatten the brain's contrast), as
    a radiologist would window; voxels outside the object (exactly 0) are black.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="black")
    masks = None if window_mask is None else [m != 0 for m, _ in orthogonal_views(window_mask, center_lps)]
    rows = -(-len(panels) // columns)
    fig = plt.figure(figsize=(columns * 6.0, rows * 2.6 + (0.5 if title else 0)), facecolor="black")
    outer = fig.add_gridspec(rows, columns, wspace=0.04, hspace=0.22)
    for n, panel in enumerate(panels):
        views = orthogonal_views(panel.volume, center_lps)
        windowed = [v[m] if masks else v for (v, _), m in zip(views, masks or [None] * 3)]
        low, high = _window(np.concatenate([w.ravel() for w in windowed]), panel.signed)
        inner = outer[n // columns, n % columns].subgridspec(1, 3, wspace=0.02)
        overlays = orthogonal_views(panel.overlay, center_lps) if panel.overlay is not None else [None] * 3
        for m, ((view, aspect), overlay) in enumerate(zip(views, overlays)):
            ax = fig.add_subplot(inner[0, m])
            shown = np.ma.masked_equal(view, 0) if panel.signed else view
            ax.imshow(shown, cmap=cmap, vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            if overlay is not None:
                ax.imshow(_overlay_rgba(overlay[0]), aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
            if m == 1:
                ax.set_title(f"{panel.title}\n{panel.caption}", color="white", fontsize=10)
    if title:
        fig.suptitle(title, color="white", fontsize=13)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, facecolor="black", bbox_inches="tight")
    plt.close(fig)
    return path
