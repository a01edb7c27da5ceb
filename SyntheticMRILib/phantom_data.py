"""Training-side helpers for the phantoms of :mod:`SyntheticMRILib.phantoms`: a torch ``Dataset`` of 2-D
slices, scanner effects for contrast augmentation, and the quality report.

Noise, bias and blur belong to the synthesized contrasts, not to the quantitative maps: the training
code synthesizes a weighted image from a slice's maps (one physics layer) and then applies
:func:`scanner_effects`.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import phantom
from .errors import InputError
from .phantom_sources import NORMS_ML, NORMS_SOURCE, STRUCTURES, TISSUE_GROUPS, PathLike
from .phantoms import VARIATION, SubjectSpec, generate_subject, plan_split
from .tissues import TISSUES
from .volumes import Volume, read_volume

__all__ = ["scanner_effects", "PhantomSlices", "write_report"]


# --------------------------------------------------------------------------- scanner effects (augmentation)


def scanner_effects(image: torch.Tensor, rng: Optional[torch.Generator] = None, snr: Optional[float] = 30.0,
                    bias: float = 0.2, bias_grid: int = 4, resolution_loss: float = 1.0, spatial_dims: int = 2,
                    sigma: Optional[float] = None) -> torch.Tensor:
    """A synthesized magnitude image as a scanner would give it: blur, coil bias, Rician noise. Pure torch.

    ``image``: ``[..., H, W]`` (or ``[..., D, H, W]`` with ``spatial_dims=3``); every
    leading index gets its own bias field and noise. ``resolution_loss`` (>= 1)
    averages over that many pixels and interpolates back (a lower acquired
    resolution). ``bias``: standard deviation of the log of a smooth multiplicative
    field (a ``bias_grid``-point random grid, interpolated). ``snr``: mean foreground
    signal over the noise sigma of each complex channel, so the magnitude is
    Rician; ``None`` skips noise. ``sigma`` instead sets that noise level in absolute
    units (signal of PD 1, fully relaxed = 1), so a contrast that loses signal loses SNR
    with it, as on a scanner. Differentiable in ``image`` (noise is additive,
    the magnitude is kept away from the non-differentiable zero).
    """
    if spatial_dims not in (2, 3) or image.dim() < spatial_dims:
        raise InputError("scanner_effects needs spatial_dims 2 or 3 and an image with at least that many dimensions")
    size = image.shape[-spatial_dims:]
    batch = image.reshape(-1, 1, *size)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    if resolution_loss > 1:
        low = [max(1, int(round(n / resolution_loss))) for n in size]
        batch = F.interpolate(F.interpolate(batch, size=low, mode="area"), size=size, mode=mode, align_corners=False)
    if bias > 0:
        knots = torch.randn((batch.shape[0], 1) + (bias_grid,) * spatial_dims, generator=rng, dtype=batch.dtype)
        field = F.interpolate(knots.to(batch.device), size=size, mode=mode, align_corners=True)
        batch = batch * torch.exp(bias * field)
    if sigma is not None or (snr is not None and snr > 0):
        if sigma is None:
            foreground = batch.detach() > 0
            counts = foreground.flatten(1).sum(dim=1).clamp(min=1)
            mean = (batch.detach() * foreground).flatten(1).sum(dim=1) / counts
            sigma = (mean / snr).view(-1, *([1] * (spatial_dims + 1)))
        noise = torch.randn((2,) + batch.shape, generator=rng, dtype=batch.dtype).to(batch.device)
        batch = torch.sqrt((batch + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2 + 1e-12)
    return batch.reshape(image.shape)


# --------------------------------------------------------------------------- torch dataset of 2-D slices

_AXES = {"axial": 2, "coronal": 1, "sagittal": 0}  # LPS component each view's normal follows


def _slice_axis(volume: Volume, axis: Union[str, int]) -> int:
    """The array axis (k, j, i order) whose direction is closest to the view's normal, or an int as given."""
    if isinstance(axis, int):
        return axis
    if axis not in _AXES:
        raise InputError(f"unknown axis {axis!r}; use axial, coronal, sagittal or 0-2")
    columns = np.abs(np.asarray(volume.direction, dtype=float).reshape(3, 3)[_AXES[axis]])  # per ITK axis i, j, k
    return 2 - int(np.argmax(columns))


class PhantomSlices(torch.utils.data.Dataset):
    """2-D slices of phantom subjects: ``t1``, ``t2`` (ms), ``pd`` (fraction) float32 ``[H, W]``,
    ``labels`` (long), ``lesions`` (uint8), and the slice's geometry.

    Either from a folder written by ``syntheticmri phantom`` (``PhantomSlices(folder)``)
    or generated on the fly (``PhantomSlices(split="train", count=8, seed=0)``).
    Geometry: ``spacing`` (row, column mm) and ``slice_to_ras`` (4x4: (column,
    row, 0, 1) -> RAS mm, Slicer's convention). Subjects are kept in a small LRU
    cache (``cache_subjects``): visit slices subject by subject (:meth:`grouped_order`)
    so each is read or generated once per pass. On the fly, all subjects share one
    fixed field of view, so the length is known in advance; with ``skip_empty``,
    empty slices are replaced by the subject's non-empty slices stretched over
    the same range (from a folder, they are simply left out).
    """

    def __init__(self, folder: Optional[PathLike] = None, *, split: Optional[str] = None, count: int = 1,
                 seed: int = 0, axis: Union[str, int] = "axial", skip_empty: bool = True, resolution: float = 1.0,
                 field: Optional[float] = None, lesions: str = "none", sources: Optional[Sequence[str]] = None,
                 cache_subjects: int = 2) -> None:
        if (folder is None) == (split is None):
            raise InputError("PhantomSlices needs either a folder or a split")
        self.folder = None if folder is None else Path(folder)
        self.axis_name, self.skip_empty, self.resolution = axis, skip_empty, resolution
        self._cache: "OrderedDict[int, Dict[str, Any]]" = OrderedDict()
        self._cache_size = max(1, cache_subjects)
        self._slices: List[Optional[List[int]]] = []
        if self.folder is not None:
            manifest = self.folder / "manifest.json"
            if not manifest.is_file():
                raise InputError(f"{manifest}: not found; write the folder with syntheticmri phantom")
            self.records = json.loads(manifest.read_text())["subjects"]
            self.specs: List[Optional[SubjectSpec]] = [None] * len(self.records)
            self.ids = [record["id"] for record in self.records]
            for n, record in enumerate(self.records):  # labels are small: read them to index the slices
                labels = read_volume(self.folder / record["files"]["labels"])
                self._slices.append(self._nonempty(labels) if skip_empty else list(range(labels.array.shape[_slice_axis(labels, axis)])))
            self.index = [(n, s) for n, slices in enumerate(self._slices) for s in slices]  # type: ignore[union-attr]
        else:
            self.specs = list(plan_split(split, count, seed, field, lesions, sources))  # type: ignore[arg-type]
            self.records = [None] * len(self.specs)  # type: ignore[list-item]
            self.ids = [spec.id for spec in self.specs]  # type: ignore[union-attr]
            shape = [int(math.ceil(f / resolution - 1e-6)) for f in VARIATION.fov_mm][::-1]  # k, j, i
            depth = shape[axis if isinstance(axis, int) else 2 - _AXES[axis]]  # generated grids are LPS-aligned
            self._slices = [None] * len(self.specs)
            self.index = [(n, s) for n in range(len(self.specs)) for s in range(depth)]

    def _nonempty(self, labels: Volume) -> List[int]:
        axis = _slice_axis(labels, self.axis_name)
        other = tuple(a for a in range(3) if a != axis)
        return np.flatnonzero((labels.array > 0).any(axis=other)).tolist()

    def __len__(self) -> int:
        return len(self.index)

    def grouped_order(self, seed: int = 0) -> List[int]:
        """A shuffled order that visits subjects one at a time (slices shuffled within), for a DataLoader sampler."""
        rng = np.random.default_rng(seed)
        by_subject: Dict[int, List[int]] = {}
        for position, (n, _) in enumerate(self.index):
            by_subject.setdefault(n, []).append(position)
        order: List[int] = []
        for n in rng.permutation(sorted(by_subject)):
            order += rng.permutation(by_subject[int(n)]).tolist()
        return order

    def subject(self, n: int) -> Dict[str, Any]:
        """Subject ``n``'s volumes (from the cache, the folder or the generator)."""
        if n in self._cache:
            self._cache.move_to_end(n)
            return self._cache[n]
        if self.folder is not None:
            files = self.records[n]["files"]
            volumes = {name: read_volume(self.folder / path) for name, path in files.items()}
        else:
            subject = generate_subject(self.specs[n], self.resolution)  # type: ignore[arg-type]
            self.records[n] = subject.record
            volumes = {"t1": subject.t1, "t2": subject.t2, "pd": subject.pd, "labels": subject.labels}
            if subject.lesions is not None:
                volumes["lesions"] = subject.lesions
            self._slices[n] = self._nonempty(subject.labels) if self.skip_empty else None
        self._cache[n] = volumes
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return volumes

    def __getitem__(self, position: int) -> Dict[str, Any]:
        n, s = self.index[position]
        volumes = self.subject(n)
        grid = volumes["labels"]
        axis = _slice_axis(grid, self.axis_name)
        if self.folder is None and self._slices[n]:
            depth = grid.array.shape[axis]
            slices = self._slices[n]
            s = slices[min(len(slices) - 1, s * len(slices) // depth)]  # type: ignore[index]
        take = lambda v: np.take(np.asarray(v.array), s, axis=axis)  # noqa: E731
        item = {name: torch.from_numpy(take(volumes[name]).astype(np.float32)) for name in ("t1", "t2", "pd")}
        item["labels"] = torch.from_numpy(take(grid).astype(np.int64))
        item["lesions"] = torch.from_numpy(take(volumes["lesions"]).astype(np.uint8)) if "lesions" in volumes \
            else torch.zeros(item["labels"].shape, dtype=torch.uint8)
        rows, cols = [a for a in range(3) if a != axis]
        ijk = grid.ijk_to_ras()  # columns i, j, k: array axis a is ITK axis 2 - a
        matrix = np.eye(4)
        matrix[:, 0], matrix[:, 1] = ijk[:, 2 - cols], ijk[:, 2 - rows]
        matrix[:3, 3] = ijk[:3, 3] + s * ijk[:3, 2 - axis]
        item["slice_to_ras"] = torch.from_numpy(matrix)
        item["spacing"] = torch.tensor([grid.spacing[2 - rows], grid.spacing[2 - cols]], dtype=torch.float64)
        item["subject"], item["slice"] = self.ids[n], s
        return item


# --------------------------------------------------------------------------- report


def _tissue_medians(subject: Mapping[str, Volume], reach_mm: float = 1.5) -> Dict[str, Tuple[float, float, float]]:
    """Median T1, T2, PD of each tissue over its interior: voxels at least ``reach_mm`` (the 3-sigma reach of
    the partial-volume kernel) from any other tissue, lesions left out.

    Boundary voxels are mixtures by design, and the rates mix: 1 % of bone (T2 ~ 1 ms) in a CSF voxel
    halves its T2. They say nothing about the tissue's own value. Tissues without an interior are left out.
    """
    labels = np.asarray(subject["labels"].array)
    index, names = phantom.tissue_index(labels, phantom.HEAD_TISSUE)
    inner = index > 0
    for axis in range(3):
        for shift in (1, -1):  # np.roll wraps around; the grid's faces are background or cut, never interior
            inner &= np.roll(index, shift, axis) == index
    for _ in range(int(math.ceil(reach_mm / min(subject["labels"].spacing) - 1e-6)) - 1):  # erode to the full reach
        for axis in range(3):
            for shift in (1, -1):
                inner &= np.roll(inner, shift, axis)
    if "lesions" in subject:
        inner &= np.asarray(subject["lesions"].array) == 0
    medians = {}
    for n, name in enumerate(names):
        where = inner & (index == n + 1)
        if where.any():
            medians[name] = tuple(float(np.median(np.asarray(subject[m].array)[where])) for m in ("t1", "t2", "pd"))
    return medians  # type: ignore[return-value]


def _report_folders(folder: Path) -> List[Path]:
    """``folder`` itself when it holds a manifest, else its sub-folders that do (e.g. ``train/`` and ``external/``)."""
    if (folder / "manifest.json").is_file():
        return [folder]
    found = sorted(path.parent for path in folder.glob("*/manifest.json"))
    if not found:
        raise InputError(f"{folder}: no manifest.json in it or its sub-folders; write it with syntheticmri phantom")
    return found


def _volume_table(records: Sequence[Mapping[str, Any]]) -> List[str]:
    lines = ["| structure | mean ± sd | CV % | range | norm mean ± sd | norm 1st-99th pct | inside |",
             "|---|---|---|---|---|---|---|"]
    for name in list(STRUCTURES) + list(TISSUE_GROUPS) + ["BrainSegNotVent"]:
        values = np.array([r["volumes_ml"][name] for r in records])
        m, s, low, high = NORMS_ML[name]
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        inside = int(((values >= low) & (values <= high)).sum())
        lines.append(f"| {name} | {values.mean():.2f} ± {sd:.2f} | {100 * sd / values.mean():.1f} | "
                     f"{values.min():.2f}-{values.max():.2f} | {m:.2f} ± {s:.2f} | {low:.2f}-{high:.2f} | {inside}/{len(values)} |")
    return lines


def write_report(folder: PathLike, montage_subjects: int = 6) -> Tuple[Path, Path]:
    """``report.png`` (several subjects' T1 maps with their structures) and ``report.md`` (structure volumes
    per split vs adult norms, tissue relaxation medians vs the literature table) for a folder written by
    ``syntheticmri phantom``, or for a folder of such folders (one report over, e.g., train and external)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import orthogonal_views

    folder = Path(folder)
    datasets = [PhantomSlices(path, skip_empty=False) for path in _report_folders(folder)]
    subjects = [(d, n) for d in datasets for n in range(len(d.records))]
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for d, n in subjects:
        groups.setdefault(d.records[n]["split"], []).append(d.records[n])
    per_group = max(1, montage_subjects // len(groups))
    shown = []
    for split in groups:
        members = [k for k, (d, n) in enumerate(subjects) if d.records[n]["split"] == split]
        shown += [members[int(i)] for i in np.unique(np.linspace(0, len(members) - 1, per_group).round())]
    colours = matplotlib.colormaps["tab20"]
    lut = np.zeros((1024, 4))
    for n, label in enumerate(STRUCTURES.values()):
        lut[label] = colours(n % 20)[:3] + (0.55,)
    fig, axes = plt.subplots(len(shown), 3, figsize=(9, 3.1 * len(shown)), facecolor="black", squeeze=False)
    medians: Dict[Tuple[str, float], List[Tuple[float, float, float]]] = {}
    for k, (dataset, n) in enumerate(subjects):
        record, volumes = dataset.records[n], dataset.subject(n)
        tissues = _tissue_medians(volumes)
        for tissue, value in tissues.items():
            medians.setdefault((tissue, record["field_strength"]), []).append(value)
        if k not in shown:
            continue
        labels = volumes["labels"]
        inside = np.argwhere(np.isin(labels.array, [STRUCTURES["Left-Putamen"], STRUCTURES["Left-Thalamus"]]))
        centre = np.asarray(labels.origin) + inside.mean(axis=0)[::-1] * np.asarray(labels.spacing)  # through the left nuclei
        top = 1.6 * tissues["cortex"][0]  # WM dark, grey matter mid-grey, CSF white
        for m, ((t1, aspect), (lab, _)) in enumerate(zip(orthogonal_views(volumes["t1"], centre), orthogonal_views(labels, centre))):
            ax = axes[shown.index(k), m]
            ax.imshow(t1, cmap="gray", vmin=0, vmax=top, aspect=aspect, interpolation="nearest")
            ax.imshow(lut[np.clip(lab.astype(np.int64), 0, 1023)], aspect=aspect, interpolation="nearest")
            ax.set_axis_off()
        axes[shown.index(k), 1].set_title(
            f"{record['id']}: {record['source']}, {record['field_strength']:g} T, {'flipped, ' if record['flip'] else ''}"
            f"lesion {record['lesion'] or 'none'}", color="white", fontsize=8)
    fig.suptitle("T1 maps with the 14 subcortical structures (radiological view)", color="white", fontsize=10)
    png = folder / "report.png"
    fig.savefig(png, dpi=80, facecolor="black", bbox_inches="tight")
    plt.close(fig)

    lines = [f"# Phantom report: {folder.name}", "", f"{len(subjects)} subjects. Volume norms: {NORMS_SOURCE}.", ""]
    for split, records in groups.items():
        lines += [f"## {split}: {len(records)} subjects, sources {', '.join(sorted({r['source'] for r in records}))}, "
                  f"{', '.join(f'{f:g} T' for f in sorted({r['field_strength'] for r in records}))}, "
                  f"{sum(r['flip'] for r in records)} flipped, lesions {', '.join(sorted({str(r['lesion']) for r in records}))}",
                  "", "Structure volumes (ml) vs adult norms:", ""] + _volume_table(records) + [""]
    lines += ["## Tissue relaxation vs the literature table (`SyntheticMRILib/tissues.py`)", "",
              "Median over each tissue's interior voxels (partial-volume boundaries and lesions left out), then median across subjects.", "",
              "| tissue | field | T1 ms | table T1 (range) | T2 ms | table T2 (range) | PD | table PD |", "|---|---|---|---|---|---|---|---|"]
    for (tissue, field), values in sorted(medians.items(), key=lambda item: (item[0][1], item[0][0])):
        t1, t2, pd = np.median(np.array(values), axis=0)
        row = TISSUES[tissue][float(field)]
        lines.append(f"| {tissue} | {field:g} T | {t1:.0f} | {row.t1:.0f} ({row.t1_range[0]:.0f}-{row.t1_range[1]:.0f}) | "
                     f"{t2:.1f} | {row.t2:.0f} ({row.t2_range[0]:g}-{row.t2_range[1]:g}) | {pd:.3f} | {row.pd:.2f} |")
    md = folder / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return png, md
