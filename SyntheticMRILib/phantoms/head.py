"""Head phantoms from brain label maps: head layers, partial volume and T1/T2/PD maps.

The building blocks of the bundled sample (``Resources/SampleData``) and of the
phantom generator. Pure numpy and SimpleITK; every function takes a
:class:`~SyntheticMRILib.io.volumes.Volume` (or an array and its spacing) and never
modifies its input. Randomness comes only from a ``seed``: the same seed gives
the same phantom, bit for bit.

Pipeline::

    labels = aparc_to_aseg(brain)                       # cortical parcels -> 3 / 42
    head = add_head_layers(labels, seed=1)               # CSF, skull, scalp around the brain
    head = crop_to_foreground(head, margin_mm=3)
    t1, t2, pd = tissue_maps(head, field_strength=3.0, seed=1)

New labels (FreeSurferColorLUT numbering, checked against FreeSurfer's
``distribution/FreeSurferColorLUT.txt``):

====  ==================  ======================================  ===============
 No.   LUT name            used for                                table tissue
====  ==================  ======================================  ===============
 257   CSF-ExtraCerebral   subarachnoid CSF: sulci and a shell      ``csf``
 165   Skull               inner and outer table (compact bone)     ``bone``
 142   Diploe              marrow between the tables                ``fat`` (proxy)
 123   Muscle              galea / pericranium, temporalis          ``muscle``
 125   Adipose             subcutaneous fat of the scalp            ``fat``
 118   Epidermis           skin (epidermis and dermis)              ``muscle`` (proxy)
====  ==================  ======================================  ===============

The tissue table has no rows for skin or for (fatty, yellow) diploic marrow;
they borrow muscle and fat, which is what they resemble on T1- and T2-weighted
images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..physics.tissues import FREESURFER_TISSUE, relaxation
from ..io.volumes import Volume

__all__ = [
    "CSF_EXTRACEREBRAL", "SKULL", "DIPLOE", "MUSCLE", "ADIPOSE", "SKIN", "HEAD_LABEL_NAMES", "HEAD_TISSUE", "TISSUE_NAMES",
    "Layer", "HeadModel", "MapVariation",
    "aparc_to_aseg", "physical_coordinates", "smooth_random_field", "gaussian_smooth",
    "pad_volume", "crop_volume", "foreground_box", "crop_to_foreground",
    "add_head_layers", "distance_outside", "tissue_index", "mix_partial_volume", "tissue_maps",
]

CSF_EXTRACEREBRAL = 257
SKULL = 165
DIPLOE = 142
MUSCLE = 123
ADIPOSE = 125
SKIN = 118

HEAD_LABEL_NAMES: Dict[int, str] = {
    CSF_EXTRACEREBRAL: "CSF-ExtraCerebral",
    SKULL: "Skull",
    DIPLOE: "Diploe",
    MUSCLE: "Muscle",
    ADIPOSE: "Adipose",
    SKIN: "Epidermis",
}

# FreeSurfer label -> tissue of the table, brain labels plus the head labels above.
HEAD_TISSUE: Dict[int, str] = {
    **FREESURFER_TISSUE,
    CSF_EXTRACEREBRAL: "csf",
    SKULL: "bone",
    DIPLOE: "fat",
    MUSCLE: "muscle",
    ADIPOSE: "fat",
    SKIN: "muscle",
}

TISSUE_NAMES: Tuple[str, ...] = tuple(sorted(set(HEAD_TISSUE.values())))
"""The tissues a head label map can hold, in the order training code numbers them."""

Seed = Union[int, Sequence[int]]


# --------------------------------------------------------------------------- labels


def aparc_to_aseg(labels: np.ndarray) -> np.ndarray:
    """Cortical parcels back to cortex: 1000-1999 and 11000-11999 -> 3, 2000-2999 and 12000-12999 -> 42.

    Covers aparc+aseg (Desikan-Killiany, DKT) and aparc.a2009s+aseg (Destrieux);
    every other label is kept. Returns a new array: same dtype for integer
    labels, int32 for float ones (FreeSurfer's aseg.mgz is sometimes float32).
    """
    labels = np.asarray(labels)
    out = np.array(labels, copy=True) if np.issubdtype(labels.dtype, np.integer) else np.rint(labels).astype(np.int32)
    left = ((labels >= 1000) & (labels < 2000)) | ((labels >= 11000) & (labels < 12000))
    right = ((labels >= 2000) & (labels < 3000)) | ((labels >= 12000) & (labels < 13000))
    out[left] = 3
    out[right] = 42
    return out


def _label_dtype(array: np.ndarray) -> np.ndarray:
    """Labels as uint16 when they fit (NRRD-friendly, as FreeSurfer writes them), else int32."""
    if array.size == 0 or (array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max):
        return array.astype(np.uint16)
    return array.astype(np.int32)


# --------------------------------------------------------------------------- grids


def _index_to_lps(volume: Volume) -> np.ndarray:
    """3x3 matrix from ITK index (i, j, k) to LPS millimetres, without the origin."""
    return np.asarray(volume.direction, dtype=float).reshape(3, 3) * np.asarray(volume.spacing, dtype=float)


def _array_spacing(spacing: Sequence[float]) -> Tuple[float, float, float]:
    """ITK spacing (i, j, k) in array-axis order (k, j, i)."""
    return tuple(float(s) for s in reversed(tuple(spacing)))  # type: ignore[return-value]


def physical_coordinates(volume: Volume, dtype=np.float32) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LPS x, y, z (mm) of every voxel centre of ``volume``, each an array of its shape."""
    matrix = _index_to_lps(volume)
    shape = volume.array.shape
    index = [np.arange(n, dtype=float) for n in reversed(shape)]  # i, j, k
    coords = []
    for row in range(3):
        k = (matrix[row, 2] * index[2])[:, None, None]
        j = (matrix[row, 1] * index[1])[None, :, None]
        i = (matrix[row, 0] * index[0])[None, None, :]
        coords.append(np.broadcast_to((volume.origin[row] + k) + j + i, shape).astype(dtype))
    return coords[0], coords[1], coords[2]


def smooth_random_field(
    grid: Volume, seed: Seed, wavelength_mm: float = 60.0, waves: int = 24
) -> np.ndarray:
    """A smooth random field on ``grid``: mean 0, variance 1, features about ``wavelength_mm`` across.

    A sum of ``waves`` plane waves with random directions, phases and wavelengths
    (uniform within a factor 1.5 of ``wavelength_mm``), each of amplitude
    ``sqrt(2 / waves)``. It is defined in physical (LPS) space, so a cropped or
    padded grid sees the same values at the same points. Deterministic in ``seed``.
    """
    if waves < 1 or wavelength_mm <= 0:
        raise InputError("smooth_random_field needs waves >= 1 and a positive wavelength")
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = wavelength_mm * np.exp(rng.uniform(-math.log(1.5), math.log(1.5), waves))
    phases = rng.uniform(0, 2 * math.pi, waves)
    wavevectors = directions * (2 * math.pi / lengths)[:, None]  # rad / mm, LPS
    matrix = _index_to_lps(grid)
    origin = np.asarray(grid.origin, dtype=float)
    nk, nj, ni = grid.array.shape
    field = np.zeros(grid.array.shape, dtype=np.float32)
    amplitude = math.sqrt(2.0 / waves)
    for vector, phase in zip(wavevectors, phases):
        per_index = vector @ matrix  # phase step per unit of i, j, k
        offset = float(vector @ origin) + phase
        kj = offset + per_index[2] * np.arange(nk)[:, None] + per_index[1] * np.arange(nj)[None, :]
        i = per_index[0] * np.arange(ni)
        cos_kj, sin_kj = np.cos(kj).astype(np.float32), np.sin(kj).astype(np.float32)
        cos_i, sin_i = np.cos(i).astype(np.float32), np.sin(i).astype(np.float32)
        # cos(a + b) = cos a cos b - sin a sin b, evaluated as two outer products
        field += amplitude * (cos_kj[:, :, None] * cos_i[None, None, :] - sin_kj[:, :, None] * sin_i[None, None, :])
    return field


def _gaussian_weights(sigma_voxels: float) -> np.ndarray:
    if sigma_voxels <= 0:
        return np.ones(1, dtype=np.float64)
    radius = max(1, int(math.ceil(3.0 * sigma_voxels)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma_voxels) ** 2)
    return weights / weights.sum()


def gaussian_smooth(array: np.ndarray, spacing: Sequence[float], sigma_mm: float) -> np.ndarray:
    """Separable Gaussian of standard deviation ``sigma_mm`` (float32 result).

    ``spacing`` is ITK order (i, j, k), as in :class:`Volume`. The border is
    extended by its edge value ("nearest"), so smoothing a partition of unity
    (one-hot tissue fractions) keeps it one everywhere. The kernel is cut at 3
    sigma and normalized; ``sigma_mm <= 0`` returns a float32 copy.
    """
    out = np.array(array, dtype=np.float32, copy=True)
    for axis, step in enumerate(_array_spacing(spacing)):
        weights = _gaussian_weights(sigma_mm / step if sigma_mm > 0 else 0.0)
        radius = len(weights) // 2
        if radius == 0 or out.shape[axis] == 0:
            continue
        widths = [(0, 0)] * out.ndim
        widths[axis] = (radius, radius)
        padded = np.pad(out, widths, mode="edge")
        smoothed = np.zeros_like(out)
        n = out.shape[axis]
        for offset, weight in enumerate(weights):
            window = [slice(None)] * out.ndim
            window[axis] = slice(offset, offset + n)
            smoothed += np.float32(weight) * padded[tuple(window)]
        out = smoothed
    return out


# --------------------------------------------------------------------------- pad and crop


def pad_volume(
    volume: Volume, before: Sequence[int], after: Sequence[int], value: float = 0
) -> Volume:
    """``volume`` with ``before``/``after`` voxels added on each array axis (k, j, i order, like numpy.pad).

    The grid grows outwards: the origin moves so every existing voxel keeps its
    physical position. New voxels hold ``value``.
    """
    before = [int(b) for b in before]
    after = [int(a) for a in after]
    if len(before) != 3 or len(after) != 3 or min(before + after) < 0:
        raise InputError("pad_volume needs three non-negative widths before and after")
    array = np.pad(volume.array, list(zip(before, after)), mode="constant", constant_values=value)
    shift = _index_to_lps(volume) @ np.asarray(before[::-1], dtype=float)
    origin = tuple(float(o) for o in np.asarray(volume.origin, dtype=float) - shift)
    return Volume(array, tuple(volume.spacing), origin, tuple(volume.direction))


def crop_volume(volume: Volume, box: Sequence[slice]) -> Volume:
    """The sub-volume ``volume.array[box]`` (three step-1 slices, array order) on its own, exact grid."""
    starts = []
    for axis, (piece, n) in enumerate(zip(box, volume.array.shape)):
        start, stop, step = piece.indices(n)
        if step != 1 or stop <= start:
            raise InputError(f"crop_volume: axis {axis} needs a non-empty step-1 slice, got {piece}")
        starts.append(start)
    array = np.array(volume.array[tuple(box)], copy=True)
    shift = _index_to_lps(volume) @ np.asarray(starts[::-1], dtype=float)
    origin = tuple(float(o) for o in np.asarray(volume.origin, dtype=float) + shift)
    return Volume(array, tuple(volume.spacing), origin, tuple(volume.direction))


def foreground_box(
    mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), margin_mm: float = 0.0
) -> Tuple[slice, slice, slice]:
    """Bounding box (array order) of the non-zero voxels of ``mask`` widened by ``margin_mm``, within the array."""
    mask = np.asarray(mask) != 0
    if not mask.any():
        raise InputError("foreground_box: the mask is empty")
    box = []
    for axis, step in enumerate(_array_spacing(spacing)):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        margin = int(math.ceil(margin_mm / step - 1e-9)) if margin_mm > 0 else 0
        box.append(slice(max(0, hits[0] - margin), min(mask.shape[axis], hits[-1] + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def crop_to_foreground(volume: Volume, margin_mm: float = 3.0, mask: Optional[np.ndarray] = None) -> Volume:
    """``volume`` cropped to the box of ``mask`` (default: its own non-zero voxels) plus ``margin_mm``."""
    mask = volume.array if mask is None else mask
    return crop_volume(volume, foreground_box(mask, volume.spacing, margin_mm))


# --------------------------------------------------------------------------- head layers


@dataclass(frozen=True)
class Layer:
    """Thickness (mm) of one head layer: ``mean + sd * field``, clipped to ``[low, high]``."""

    mean: float
    sd: float
    low: float
    high: float

    def thickness(self, field: np.ndarray) -> np.ndarray:
        return np.clip(self.mean + self.sd * field, self.low, self.high).astype(np.float32)


@dataclass(frozen=True)
class HeadModel:
    """Thicknesses of the layers put around the brain, inside out (adult values, mm).

    Each layer varies smoothly over the head (its own random field of about
    ``wavelength_mm``), so the shells are not concentric copies of each other.
    The temporalis muscle thickens the muscle layer over the temporal fossa,
    where the skull (temporal squama) is thinner. Sulci and fissures narrower than
    about twice ``sulcal_closing_mm`` fill with CSF, and the skull follows that
    closed brain outline rather than every gyrus.

    Typical adult values: extra-cerebral CSF 1-4 mm, skull 4-10 mm with 1-2 mm
    tables, scalp 5-8 mm (skin about 2 mm, subcutaneous fat 2-5 mm, galea thin),
    temporalis up to about 1 cm.
    """

    csf: Layer = Layer(2.5, 0.8, 1.0, 4.5)
    skull: Layer = Layer(6.5, 1.5, 3.5, 10.0)
    inner_table_mm: float = 1.5
    outer_table_mm: float = 2.0
    muscle: Layer = Layer(1.5, 0.4, 1.0, 2.5)
    temporalis_mm: float = 7.0
    temporal_thinning_mm: float = 2.5
    fat: Layer = Layer(3.0, 1.0, 1.0, 5.5)
    skin: Layer = Layer(2.0, 0.3, 1.5, 3.0)
    sulcal_closing_mm: float = 6.0
    wavelength_mm: float = 50.0

    def max_thickness_mm(self) -> float:
        """Largest possible distance from the brain outline to the skin surface."""
        return self.csf.high + self.skull.high + self.muscle.high + self.temporalis_mm + self.fat.high + self.skin.high


def distance_outside(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) from each voxel centre to the nearest voxel of ``mask`` (0 inside)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(distance), 0).astype(np.float32)


def _closing(mask: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` (exact Euclidean, via distance maps)."""
    if radius_mm <= 0:
        return mask.copy()
    dilated = distance_outside(mask, spacing) <= radius_mm
    return distance_outside(~dilated, spacing) > radius_mm


def _superior_axis(volume: Volume) -> Tuple[int, int]:
    """(array axis closest to head-foot, +1 if its index grows towards superior else -1)."""
    matrix = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    z = matrix[2]  # LPS z (superior) component of each index direction i, j, k
    itk_axis = int(np.argmax(np.abs(z)))
    return 2 - itk_axis, (1 if z[itk_axis] > 0 else -1)


def _temporal_weight(grid: Volume, brain: np.ndarray) -> np.ndarray:
    """0-1 weight over the temporal fossae, from LPS coordinates relative to the brain's extent."""
    x, y, z = physical_coordinates(grid)
    lows, highs = [], []
    for c in (x, y, z):
        values = c[brain]
        lows.append(float(values.min()))
        highs.append(float(values.max()))
    centre = [(lo + hi) / 2 for lo, hi in zip(lows, highs)]
    half = [max((hi - lo) / 2, 1.0) for lo, hi in zip(lows, highs)]
    u = np.abs(x - centre[0]) / half[0]           # 0 at the midline, 1 at the brain's side
    lateral = np.clip((u - 0.55) / 0.3, 0, 1)
    lateral = lateral * lateral * (3 - 2 * lateral)   # smoothstep
    v = (y - centre[1]) / half[1]                  # LPS y: posterior positive
    w = (z - centre[2]) / half[2]                  # superior positive
    return (lateral * np.exp(-0.5 * ((v + 0.13) / 0.35) ** 2) * np.exp(-0.5 * ((w + 0.05) / 0.3) ** 2)).astype(np.float32)


def add_head_layers(
    labels: Volume, seed: Seed = 0, model: HeadModel = HeadModel(), open_inferior: bool = True
) -> Volume:
    """A head label map: ``labels`` (an aseg-style brain) wrapped in CSF, skull and scalp.

    Brain voxels (label > 0) keep their label. Around them, inside out:
    sulcal and extra-cerebral CSF (257), skull (165, with diploe 142 between
    the tables where the bone is thick enough), muscle (123: galea and, over the
    temporal fossae, temporalis), subcutaneous fat (125) and skin (118). Layer
    thicknesses follow ``model`` and vary smoothly with ``seed``.

    ``open_inferior``: FreeSurfer's brain stem label simply stops somewhere in
    the medulla. The head is taken to continue below that last brain slice
    (axial, the grid axis closest to head-foot) and is cut there, like a field
    of view that ends near the foramen magnum, instead of closing a bowl of
    skull under the brain stem. With ``False`` the layers wrap the whole brain.

    The result lies on ``labels``' grid padded just enough to hold the head
    (see :func:`crop_to_foreground` to trim it); uint16 when the labels fit.
    """
    brain_labels = np.asarray(labels.array)
    if brain_labels.ndim != 3:
        raise InputError("add_head_layers needs a 3-D label map")
    if not (brain_labels > 0).any():
        raise InputError("add_head_layers: the label map has no brain (no label > 0)")
    if (brain_labels < 0).any():
        raise InputError("add_head_layers: negative labels")
    spacing = tuple(float(s) for s in labels.spacing)
    step = _array_spacing(spacing)
    axis, up = _superior_axis(labels)

    reach = model.max_thickness_mm() + model.sulcal_closing_mm + 2.0
    pad = [int(math.ceil(reach / s)) + 1 for s in step]
    before, after = list(pad), list(pad)
    if open_inferior:
        # Start the grid at the most inferior brain slice and add nothing below it:
        # with no room there, the layers stay open and the head ends at that plane.
        hits = np.flatnonzero((brain_labels > 0).any(axis=tuple(a for a in range(3) if a != axis)))
        box = [slice(None)] * 3
        if up > 0:
            box[axis], before[axis] = slice(int(hits[0]), None), 0
        else:
            box[axis], after[axis] = slice(0, int(hits[-1]) + 1), 0
        labels = crop_volume(labels, box)
    grid = pad_volume(labels.with_array(np.asarray(labels.array).astype(np.int32)), before, after, 0)
    out = np.array(grid.array, dtype=np.int32)
    brain = out > 0

    closed = _closing(brain, spacing, model.sulcal_closing_mm) | brain
    distance = distance_outside(closed, spacing)

    fields = [smooth_random_field(grid, (*np.atleast_1d(seed).tolist(), 1, n), model.wavelength_mm) for n in range(5)]
    temporal = _temporal_weight(grid, brain) if (model.temporalis_mm > 0 or model.temporal_thinning_mm > 0) else 0.0
    csf = model.csf.thickness(fields[0])
    skull = np.maximum(model.skull.thickness(fields[1]) - model.temporal_thinning_mm * temporal, model.skull.low * 0.5)
    muscle = model.muscle.thickness(fields[2]) + model.temporalis_mm * temporal
    fat = model.fat.thickness(fields[3])
    skin = model.skin.thickness(fields[4])
    del fields

    out[closed & ~brain] = CSF_EXTRACEREBRAL
    outer = distance > 0
    edge = csf
    out[outer & (distance <= edge)] = CSF_EXTRACEREBRAL
    depth = distance - edge  # depth into the skull
    in_skull = outer & (depth > 0) & (depth <= skull)
    out[in_skull] = SKULL
    diploe = in_skull & (depth > model.inner_table_mm) & (depth <= skull - model.outer_table_mm)
    out[diploe] = DIPLOE
    edge = edge + skull
    for thickness, label in ((muscle, MUSCLE), (fat, ADIPOSE), (skin, SKIN)):
        out[outer & (distance > edge) & (distance <= edge + thickness)] = label
        edge = edge + thickness
    return grid.with_array(_label_dtype(out))


# --------------------------------------------------------------------------- maps


@dataclass(frozen=True)
class MapVariation:
    """Smooth within-tissue variation: relative standard deviation of a multiplicative field per map."""

    t1: float = 0.025
    t2: float = 0.025
    pd: float = 0.015
    wavelength_mm: float = 80.0
    clip_sd: float = 3.0


def tissue_index(labels: np.ndarray, tissue_of: Mapping[int, str] = HEAD_TISSUE) -> Tuple[np.ndarray, List[str]]:
    """Per voxel, 0 for background or 1 + the position of its tissue in the returned (sorted) names.

    Raises :class:`InputError` naming any label that ``tissue_of`` does not know.
    """
    labels = np.asarray(labels)
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if v not in tissue_of]
    if unknown:
        raise InputError(f"labels without a tissue: {unknown[:20]}{' ...' if len(unknown) > 20 else ''}")
    names = sorted({tissue_of[v] for v in present})
    number = {name: n + 1 for n, name in enumerate(names)}
    lookup_labels = np.array([0] + present, dtype=np.int64)
    lookup_index = np.array([0] + [number[tissue_of[v]] for v in present], dtype=np.uint8 if len(names) < 255 else np.int32)
    position = np.searchsorted(lookup_labels, labels.astype(np.int64).ravel())
    return lookup_index[position].reshape(labels.shape), names


def mix_partial_volume(
    index: np.ndarray,
    spacing: Sequence[float],
    values: Sequence[Tuple[float, float, float]],
    sigma_mm: float = 0.5,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2 (ms) and PD of a tissue-index map with partial volume at tissue boundaries.

    ``index`` is 0 for background and ``n`` for the tissue whose (T1, T2, PD) is
    ``values[n - 1]``. Each tissue's one-hot mask is smoothed with a Gaussian of
    ``sigma_mm`` (sub-voxel: only voxels at a boundary mix), giving fractions
    f_t that sum to 1 with the background. Then, over the tissues,
    ``R1 = sum f_t / T1_t / sum f_t`` (same for R2) and ``PD = sum f_t PD_t``,
    so air at the surface lowers PD but not the relaxation times. Background
    voxels are exactly 0 in all three maps. float32 results.
    """
    index = np.asarray(index)
    shape = index.shape
    weight = np.zeros(shape, np.float32)
    rate1 = np.zeros(shape, np.float32)
    rate2 = np.zeros(shape, np.float32)
    pd = np.zeros(shape, np.float32)
    radius = [len(_gaussian_weights(sigma_mm / s if sigma_mm > 0 else 0.0)) // 2 for s in _array_spacing(spacing)]
    for number, (t1, t2, density) in enumerate(values, start=1):
        mask = index == number
        if not mask.any():
            continue
        box = []
        for axis in range(3):
            hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
            box.append(slice(max(0, hits[0] - radius[axis]), min(shape[axis], hits[-1] + 1 + radius[axis])))
        box = tuple(box)
        fraction = gaussian_smooth(mask[box], spacing, sigma_mm)
        weight[box] += fraction
        rate1[box] += fraction * np.float32(1.0 / t1)
        rate2[box] += fraction * np.float32(1.0 / t2)
        pd[box] += fraction * np.float32(density)
    tissue = index != 0
    t1_map = np.zeros(shape, np.float32)
    t2_map = np.zeros(shape, np.float32)
    t1_map[tissue] = weight[tissue] / rate1[tissue]
    t2_map[tissue] = weight[tissue] / rate2[tissue]
    pd[~tissue] = 0
    return t1_map, t2_map, pd


def tissue_maps(
    labels: Volume,
    field_strength: float = 3.0,
    seed: Seed = 0,
    pv_sigma_mm: float = 0.5,
    variation: MapVariation = MapVariation(),
    tissue_of: Mapping[int, str] = HEAD_TISSUE,
) -> Tuple[Volume, Volume, Volume]:
    """T1, T2 (ms) and PD (fraction) volumes of a head label map at 1.5 or 3 T.

    Tissue values come from :func:`SyntheticMRILib.physics.tissues.relaxation`; boundaries
    get partial volume (:func:`mix_partial_volume`); each map is then multiplied by
    ``1 + sd * g`` with ``g`` its own smooth random field (clipped to
    ``clip_sd``), deterministic in ``seed``. PD is capped at 1 (pure water).
    Voxels with label 0 are exactly 0 in all three maps. float32, on ``labels``' grid.
    """
    index, names = tissue_index(labels.array, tissue_of)
    rows = [relaxation(name, field_strength) for name in names]
    t1, t2, pd = mix_partial_volume(index, labels.spacing, [(r.t1, r.t2, r.pd) for r in rows], pv_sigma_mm)
    head = index != 0
    seeds = np.atleast_1d(seed).tolist()
    for n, (array, sd) in enumerate(((t1, variation.t1), (t2, variation.t2), (pd, variation.pd))):
        if sd <= 0:
            continue
        g = smooth_random_field(labels, (*seeds, 2, n), variation.wavelength_mm)
        factor = 1 + np.float32(sd) * np.clip(g, -variation.clip_sd, variation.clip_sd)
        array[head] *= factor[head]
    np.minimum(pd, 1.0, out=pd)
    return labels.with_array(t1), labels.with_array(t2), labels.with_array(pd)
