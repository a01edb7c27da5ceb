"""The quality report of a phantom folder: structure volumes against adult norms, tissue relaxation medians
against the literature table, and a montage (``syntheticmri phantom --report``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from . import head
from ..errors import InputError
from ..io.labels import STRUCTURES, TISSUE_GROUPS
from .sources import NORMS_ML, NORMS_SOURCE
from ..physics.tissues import TISSUES
from ..io.volumes import PathLike, Volume
from .dataset import PhantomSlices
from .manifest import MANIFEST, has_manifest

__all__ = ["write_report"]


def _tissue_medians(subject: Mapping[str, Volume], reach_mm: float = 1.5) -> Dict[str, Tuple[float, float, float]]:
    """Median T1, T2, PD of each tissue over its interior: voxels at least ``reach_mm`` (the 3-sigma reach of
    the partial-volume kernel) from any other tissue, lesions left out.

    Boundary voxels are mixtures by design, and the rates mix: 1 % of bone (T2 ~ 1 ms) in a CSF voxel
    halves its T2. They say nothing about the tissue's own value. Tissues without an interior are left out.
    """
    labels = np.asarray(subject["labels"].array)
    index, names = head.tissue_index(labels, head.HEAD_TISSUE)
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
    if has_manifest(folder):
        return [folder]
    found = sorted(path for path in folder.glob("*") if has_manifest(path))
    if not found:
        raise InputError(f"{folder}: no {MANIFEST} in it or its sub-folders; write it with syntheticmri phantom")
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

    from ..io.figures import orthogonal_views

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
