"""FreeSurfer label names, colors and terminology, and label-map files that carry them (no Slicer needed).

The table is ``Resources/Terminology/labels.csv`` (Slicer's color-table CSV format).
Two ways to hand a label map to a viewer:

* :func:`write_color_table`: a FreeSurferColorLUT-style text table (``value name R G B A``)
  beside a plain label map; Slicer and FreeSurfer's viewers read it as a color table.
* :func:`write_seg_nrrd`: a Slicer ``.seg.nrrd``: one labelmap layer plus, per segment, its
  name, color, label value and terminology in the header, as Slicer's segmentation storage
  writes them; Slicer opens it as a segmentation node with named, colored segments.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import numpy as np

from ..errors import InputError
from ..resources import resource_path
from .volumes import PathLike, Volume, check_output_file, write_volume

__all__ = ["LabelEntry", "label_table", "label_entry", "write_color_table", "write_seg_nrrd",
           "TERMINOLOGY_CONTEXT", "LABEL_TAG"]

TERMINOLOGY_CONTEXT = "Segmentation category and type - SyntheticMRI"
# Slicer writes this region context name even when no region is coded; kept for identical tags.
REGION_CONTEXT = "Anatomic codes - DICOM master list"
# Segment tag holding the FreeSurfer label number, so a renamed segment still exports to its label.
LABEL_TAG = "SyntheticMRI.FreeSurferLabel"


# --------------------------------------------------------------------------- FreeSurfer label groups
STRUCTURES: Dict[str, int] = {
    "Left-Thalamus": 10, "Right-Thalamus": 49, "Left-Caudate": 11, "Right-Caudate": 50,
    "Left-Putamen": 12, "Right-Putamen": 51, "Left-Pallidum": 13, "Right-Pallidum": 52,
    "Left-Hippocampus": 17, "Right-Hippocampus": 53, "Left-Amygdala": 18, "Right-Amygdala": 54,
    "Left-Accumbens-area": 26, "Right-Accumbens-area": 58,
}
"""The 14 subcortical structures (FreeSurferColorLUT names and numbers)."""

TISSUE_GROUPS: Dict[str, Tuple[int, ...]] = {
    "Cerebral-Cortex": (3, 42),
    "Cerebral-White-Matter": (2, 41, 77, 78, 79, 85, 251, 252, 253, 254, 255),
    "Lateral-Ventricles": (4, 5, 43, 44),
    "Cerebellum": (7, 8, 46, 47),
    "Brain-Stem": (16,),
}


@dataclass(frozen=True)
class LabelEntry:
    """One row of the shipped label table: FreeSurfer number, name, color and terminology."""

    value: int
    name: str
    color: Tuple[int, int, int]
    terminology: str  # Slicer's serialized terminology entry (the segment's "TerminologyEntry" tag)


def _triplet(row: Mapping[str, str], prefix: str) -> str:
    return "^".join(row.get(f"{prefix}_{field}", "") or "" for field in ("CodingScheme", "CodeValue", "CodeMeaning"))


@functools.lru_cache(maxsize=None)
def label_table() -> Dict[int, LabelEntry]:
    """FreeSurfer label number -> :class:`LabelEntry`, read from ``Resources/Terminology/labels.csv``."""
    table: Dict[int, LabelEntry] = {}
    with open(resource_path("Terminology", "labels.csv"), newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            terminology = "~".join([
                TERMINOLOGY_CONTEXT, _triplet(row, "Category"), _triplet(row, "Type"), _triplet(row, "TypeModifier"),
                REGION_CONTEXT, _triplet(row, "Region"), _triplet(row, "RegionModifier"),
            ])
            color = (int(row["Color_R"]), int(row["Color_G"]), int(row["Color_B"]))
            table[int(row["LabelValue"])] = LabelEntry(int(row["LabelValue"]), row["Name"], color, terminology)
    return table


def label_entry(value: int) -> LabelEntry:
    """The table row of ``value``, or a named, colored entry without terminology for labels the table lacks."""
    known = label_table().get(value)
    if known is not None:
        return known
    rng = np.random.default_rng(value)  # stable color per label number
    return LabelEntry(value, f"Label-{value}", tuple(int(c) for c in rng.integers(40, 256, 3)), "")


def _present(labels: Volume) -> List[int]:
    return [int(v) for v in np.unique(labels.array) if v != 0]


def write_color_table(path: PathLike, values: List[int], overwrite: bool = False) -> Path:
    """``value name R G B A`` lines (FreeSurferColorLUT format) for ``values`` and 0 (background)."""
    path = check_output_file(path, overwrite)
    lines = ["# SyntheticMRI: FreeSurfer numbering (FreeSurferColorLUT format)", "0 Unknown 0 0 0 0"]
    for value in sorted(set(values) - {0}):
        entry = label_entry(value)
        lines.append(f"{value} {entry.name} {entry.color[0]} {entry.color[1]} {entry.color[2]} 255")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_seg_nrrd(labels: Volume, path: PathLike, overwrite: bool = False) -> Path:
    """``labels`` (FreeSurfer numbers) as a Slicer ``.seg.nrrd`` with one named, colored, coded segment per label."""
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise InputError(f"{path}: a Slicer segmentation file must end in .seg.nrrd")
    array = np.asarray(labels.array)
    if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
        raise InputError("label values must be in 0-65535")
    metadata = {"Segmentation_MasterRepresentation": "Binary labelmap",
                "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
                "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
    for n, value in enumerate(_present(labels)):
        entry = label_entry(value)
        k, j, i = np.nonzero(array == value)
        tags = (f"TerminologyEntry:{entry.terminology}|" if entry.terminology else "") + f"{LABEL_TAG}:{value}|"
        fields = {"ID": entry.name, "Name": entry.name, "NameAutoGenerated": "0",
                  "Color": " ".join(f"{c / 255:.6g}" for c in entry.color), "ColorAutoGenerated": "0",
                  "LabelValue": str(value), "Layer": "0",
                  "Extent": f"{i.min()} {i.max()} {j.min()} {j.max()} {k.min()} {k.max()}", "Tags": tags}
        metadata.update({f"Segment{n}_{key}": text for key, text in fields.items()})
    return write_volume(labels.with_array(array.astype(np.uint16)), path, overwrite, metadata)
