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

__all__ = ["Panel", "orthogonal_views", "montage_figure", "save_montage", "README_WIDTH_PX"]


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


# The montage is made to be read in the README: GitHub shows an image at most README_WIDTH_PX wide. It is drawn
# at twice that (sharp on high-density screens), with fonts sized for the README: captions 18 pt at 100 dpi are
# 25 px in the PNG, 12.5 px as shown there (GitHub's own small text is 12 px).
README_WIDTH_PX = 880
_DPI = 100
_WIDTH_IN = 2 * README_WIDTH_PX / _DPI
_HEADING_PT, _TITLE_PT, _CAPTION_PT = 22.0, 19.0, 18.0
_LINE = 1.25  # line height / font size
_MARGIN_IN, _COLUMN_GAP_IN, _VIEW_GAP_IN, _ROW_GAP_IN = 0.12, 0.3, 0.04, 0.22


def _wrap(text: str, points: float, width_px: float, renderer, weight: str = "normal") -> List[str]:
    """``text`` broken at spaces into lines no wider than ``width_px`` at ``points`` (measured, not guessed).
    A number stays on the line of the word before it ("TI2 551", "Dice 0.90")."""
    from matplotlib.font_manager import FontProperties

    font = FontProperties(size=points, weight=weight)
    fits = lambda line: renderer.get_text_width_height_descent(line, font, ismath=False)[0] <= width_px
    lines: List[str] = []
    for paragraph in text.split("\n"):
        words: List[str] = []
        for word in paragraph.split():
            if words and word[:1].isdigit():
                words[-1] += " " + word
            else:
                words.append(word)
        line = ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if line and not fits(candidate):
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def montage_figure(
    panels: Sequence[Panel],
    columns: int = 4,
    center_lps: Optional[Sequence[float]] = None,
    title: str = "",
    window_mask: Optional[Volume] = None,
):
    """The montage as a matplotlib figure (see :func:`save_montage`): each panel's title and caption in a band
    above its three views, never over an image; long captions wrap to the panel's width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="black")
    masks = None if window_mask is None else [m != 0 for m, _ in orthogonal_views(window_mask, center_lps)]
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    fig = plt.figure(figsize=(_WIDTH_IN, 1.0), dpi=_DPI, facecolor="black")
    renderer = fig.canvas.get_renderer()
    cell_in = (_WIDTH_IN - 2 * _MARGIN_IN - (columns - 1) * _COLUMN_GAP_IN) / columns
    cell_px = cell_in * _DPI

    views = [orthogonal_views(panel.volume, center_lps) for panel in panels]
    sizes = [[(view.shape[1], view.shape[0] * aspect) for view, aspect in panel_views] for panel_views in views]
    scales = [(cell_in - 2 * _VIEW_GAP_IN) / sum(w for w, _ in size) for size in sizes]  # inches per column
    image_in = [max(h for _, h in size) * scale for size, scale in zip(sizes, scales)]
    titles = [_wrap(panel.title, _TITLE_PT, cell_px, renderer, "bold") for panel in panels]
    captions = [_wrap(panel.caption, _CAPTION_PT, cell_px, renderer) if panel.caption else [] for panel in panels]
    line_in = lambda points: points * _LINE / 72
    heading = _wrap(title, _HEADING_PT, (_WIDTH_IN - 2 * _MARGIN_IN) * _DPI, renderer) if title else []
    heading_in = len(heading) * line_in(_HEADING_PT) + (_ROW_GAP_IN if heading else 0)
    band_in, row_in = [], []
    for r in range(rows):
        members = range(r * columns, min(len(panels), (r + 1) * columns))
        band_in.append(max(len(titles[n]) * line_in(_TITLE_PT) + len(captions[n]) * line_in(_CAPTION_PT)
                           for n in members) + 0.06)
        row_in.append(band_in[-1] + max(image_in[n] for n in members))
    height_in = 2 * _MARGIN_IN + heading_in + sum(row_in) + (rows - 1) * _ROW_GAP_IN
    fig.set_size_inches(_WIDTH_IN, height_in)
    x_frac, y_frac = 1 / _WIDTH_IN, 1 / height_in

    if heading:
        fig.text(0.5, 1 - _MARGIN_IN * y_frac, "\n".join(heading), ha="center", va="top", color="white",
                 fontsize=_HEADING_PT, linespacing=_LINE)
    top = height_in - _MARGIN_IN - heading_in
    for n, panel in enumerate(panels):
        r, c = divmod(n, columns)
        row_top = top - sum(row_in[:r]) - r * _ROW_GAP_IN
        left = _MARGIN_IN + c * (cell_in + _COLUMN_GAP_IN)
        center = (left + cell_in / 2) * x_frac
        fig.text(center, row_top * y_frac, "\n".join(titles[n]), ha="center", va="top", color="white",
                 fontsize=_TITLE_PT, fontweight="bold", linespacing=_LINE)
        if captions[n]:
            caption_top = row_top - len(titles[n]) * line_in(_TITLE_PT)
            fig.text(center, caption_top * y_frac, "\n".join(captions[n]), ha="center", va="top", color="white",
                     fontsize=_CAPTION_PT, linespacing=_LINE)
        image_top = row_top - band_in[r]
        windowed = [v[m] if masks else v for (v, _), m in zip(views[n], masks or [None] * 3)]
        low, high = _window(np.concatenate([w.ravel() for w in windowed]), panel.signed)
        overlays = orthogonal_views(panel.overlay, center_lps) if panel.overlay is not None else [None] * 3
        x = left
        for (view, aspect), overlay, (w, h) in zip(views[n], overlays, sizes[n]):
            width, height = w * scales[n], image_in[n]
            ax = fig.add_axes([x * x_frac, (image_top - height) * y_frac, width * x_frac, height * y_frac])
            shown = np.ma.masked_equal(view, 0) if panel.signed else view
            ax.imshow(shown, cmap=cmap, vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            if overlay is not None:
                ax.imshow(_overlay_rgba(overlay[0]), aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
            x += width + _VIEW_GAP_IN
    return fig


def save_montage(
    panels: Sequence[Panel],
    path: Path,
    columns: int = 4,
    center_lps: Optional[Sequence[float]] = None,
    title: str = "",
    window_mask: Optional[Volume] = None,
) -> Path:
    """Write a PNG: one tile per panel, each tile the three orthogonal views under its title and caption.

    Grey levels are windowed on the voxels where ``window_mask`` is non-zero (e.g.
    the brain, so that bright scalp fat does not flatten the brain's contrast), as
    a radiologist would window; voxels outside the object (exactly 0) are black.
    The PNG is twice :data:`README_WIDTH_PX` wide, its text sized to be read at that width.
    """
    import matplotlib.pyplot as plt

    fig = montage_figure(panels, columns, center_lps, title, window_mask)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, facecolor="black")
    plt.close(fig)
    return path
