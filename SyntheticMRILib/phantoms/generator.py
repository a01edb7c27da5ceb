"""Multi-subject brain phantoms: T1/T2/PD maps and FreeSurfer label maps for training and testing.

A *subject* is a real brain label map (an *anatomy source*, :mod:`.sources`)
made into another adult: a smooth diffeomorphic warp, a head size, maybe a
left-right mirror, head layers, its own relaxation times drawn from the literature
ranges of :mod:`SyntheticMRILib.physics.tissues` at 1.5 or 3 T, and optionally lesions (:mod:`.lesions`).
Generation never downloads; sources other than the bundled sample are fetched once
with ``syntheticmri phantom --fetch-sources``. The torch ``Dataset`` is in :mod:`.dataset`,
the report in :mod:`.report`, the scanner effects in :mod:`SyntheticMRILib.training.augment`.

Splits, fixed. Subject ``index`` of split ``split`` drawn with seed ``seed`` has
the subject seed ``seed << 35 | code(split) << 32 | index`` (recorded in the
manifest), from which all its random streams derive, so no two subjects of
different splits or indices ever share one:

============  ===========================================  =======  ============================
 split         anatomy source(s)                            field    use
============  ===========================================  =======  ============================
 ``train``     ``sample`` (bundled cvs_avg35: FreeSurfer,   3 T      fitting
               35 adults); add ``fsaverage`` (40 adults)
               with ``sources=`` / ``--sources``
 ``val``       the same sources, other subjects             3 T      model selection
 ``test``      the same sources, other subjects             3 T      internal test
 ``external``  ``ibsr`` only (IBSR: other brains, manual    1.5 T    generalization: never for
               labelling protocol)                                   training or selection
============  ===========================================  =======  ============================

``external`` differs from training in anatomy *and* field strength, so it measures
generalization rather than memory of one template. IBSR's licence is unconfirmed: it
is fetched for local use and never shipped. Without it, ``external`` fails and names
the fetch command; it never falls back to another source. An internal split may not
use the external anatomy, and ``external`` may not run at the internal 3 T.

Between-subject variation (:class:`Variation`): each of the 14 subcortical
structures gets a target volume from adult FreeSurfer norms (:data:`NORMS_ML`,
correlated with head size and between sides) and the brain a target size. A
stationary velocity field (random plane waves: smooth, stationary noise; plus one
radial bump per structure whose strengths are solved from Jacobian-predicted
volumes in a few Newton steps) is exponentiated by scaling and squaring, so the
warp is a diffeomorphism; then an affine part (scale for the brain target, small
anisotropy and rotation, optional mirror with left and right labels swapped).
Head layers (:func:`.head.add_head_layers`) are built once per source, variant
and resolution, and warped with the brain. Every subject has the same field of
view (:attr:`Variation.fov_mm`), so its slices batch without padding.

Maps are quantized to 1/8 ms and 1/1024 (binary fractions: the files compress about
twice as well). Noise, bias and blur belong to contrast synthesis, not to the maps.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .. import __version__
from . import head
from ..errors import InputError
from ..io.labels import STRUCTURES
from .sources import (NORMS_ML, NORMS_SOURCE, SOURCES, Anatomy, left_right_swap_lut, load_source,
                      source_available, source_spec, structure_volumes)
from ..physics.tissues import FIELD_STRENGTHS, TISSUES
from ..io.volumes import PathLike, Volume, check_output_folder, write_volume
from .manifest import write_manifest

__all__ = [
    "SPLITS", "INTERNAL_FIELD", "EXTERNAL_FIELD", "Variation", "VARIATION", "SubjectSpec", "Subject", "plan_split",
    "generate_subject", "write_subject", "write_split", "draw_relaxation",
]

# --------------------------------------------------------------------------- splits

SPLITS = ("train", "val", "test", "external")
_SPLIT_CODE = {name: n + 1 for n, name in enumerate(SPLITS)}
INTERNAL_SOURCES: Tuple[str, ...] = ("sample",)
EXTERNAL_SOURCES: Tuple[str, ...] = ("ibsr",)
INTERNAL_FIELD = 3.0
EXTERNAL_FIELD = 1.5


# --------------------------------------------------------------------------- sampling on identity-direction grids


def _normalized(points: torch.Tensor, grid: Volume) -> torch.Tensor:
    """LPS points [..., 3] -> grid_sample coordinates of ``grid`` (x -> i, y -> j, z -> k; align_corners)."""
    nk, nj, ni = grid.array.shape
    size = torch.tensor([ni - 1, nj - 1, nk - 1], dtype=torch.float32) * torch.tensor(grid.spacing, dtype=torch.float32)
    return 2 * (points - torch.tensor(grid.origin, dtype=torch.float32)) / size.clamp(min=1e-6) - 1


def _sample(field: torch.Tensor, grid: Volume, points: torch.Tensor, mode: str = "bilinear", padding: str = "border") -> torch.Tensor:
    """``field`` [C, k, j, i] on ``grid`` at LPS ``points`` [N, 3] -> [C, N] (trilinear or nearest)."""
    coords = _normalized(points, grid).view(1, 1, 1, -1, 3)
    return F.grid_sample(field[None], coords, mode=mode, padding_mode=padding, align_corners=True)[0, :, 0, 0]


def _grid_points(grid: Volume) -> torch.Tensor:
    nk, nj, ni = grid.array.shape
    axes = [torch.arange(n, dtype=torch.float32) * s + o for n, s, o in zip((ni, nj, nk), grid.spacing, grid.origin)]
    z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


def _unit(grid: Volume) -> torch.Tensor:
    """mm -> grid_sample units of ``grid``, per LPS component (x, y, z)."""
    nk, nj, ni = grid.array.shape
    return 2.0 / (torch.tensor([ni - 1, nj - 1, nk - 1], dtype=torch.float32) * torch.tensor(grid.spacing, dtype=torch.float32))


def _exponential(velocity: torch.Tensor, grid: Volume, squarings: int) -> torch.Tensor:
    """Displacement (mm, [3, k, j, i]) of exp(velocity): scaling and squaring, phi <- phi o phi.

    Works in grid_sample units so each squaring is one ``grid_sample`` of the field at itself.
    """
    unit = _unit(grid).view(1, 3, 1, 1, 1)
    identity = F.affine_grid(torch.eye(3, 4)[None], [1, 1, *velocity.shape[1:]], align_corners=True)
    u = velocity[None] * unit / 2.0 ** squarings
    for _ in range(squarings):
        u = u + F.grid_sample(u, identity + u.permute(0, 2, 3, 4, 1), padding_mode="border", align_corners=True)
    return (u / unit)[0]


def _jacobian_determinant(u: torch.Tensor, spacing: float) -> torch.Tensor:
    """det(I + du/dx) on the grid (central differences, edges replicated); > 0 for a diffeomorphism."""
    p = F.pad(u[None], (1, 1, 1, 1, 1, 1), mode="replicate")[0]
    d = [(p[:, 1:-1, 1:-1, 2:] - p[:, 1:-1, 1:-1, :-2]) / (2 * spacing),  # d/dx: along i
         (p[:, 1:-1, 2:, 1:-1] - p[:, 1:-1, :-2, 1:-1]) / (2 * spacing),
         (p[:, 2:, 1:-1, 1:-1] - p[:, :-2, 1:-1, 1:-1]) / (2 * spacing)]
    j = [[d[c][r] + (1.0 if r == c else 0.0) for c in range(3)] for r in range(3)]
    return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1]) - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))


# --------------------------------------------------------------------------- between-subject variation


@dataclass(frozen=True)
class Variation:
    """How subjects differ (lengths in mm). Volume targets: ``NORMS_ML`` mean + sd * z, |z| <= ``z_clip``."""

    z_clip: float = 1.8  # keeps every subject a plausible adult (inside about the 4th-96th percentile)
    size_weight: float = 0.6  # each structure's z shares this with head size (structures scale with the brain)
    pair_weight: float = 0.6  # and this with its other side (left and right volumes correlate)
    warp_rms_mm: float = 2.5  # random smooth shape change on top of the volume targets
    warp_wavelength_mm: float = 60.0
    squarings: int = 6
    bump_min_mm: float = 6.0
    fit_steps: int = 3
    rotation_sd_deg: float = 2.0
    rotation_clip_deg: float = 4.0
    anisotropy_sd: float = 0.03
    flip_probability: float = 0.5
    head_variants: int = 3
    fov_mm: Tuple[float, float, float] = (192.0, 224.0, 192.0)  # L-R, A-P, S-I: a scanner's field of view


VARIATION = Variation()


def _rng(key: Sequence[int], part: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key] + [part]))


def _volume_targets(rng: np.random.Generator, variation: Variation) -> Tuple[float, Dict[str, float]]:
    """Brain (ml) and structure volume targets, correlated through head size and between sides."""
    clip = variation.z_clip
    size = float(np.clip(rng.standard_normal(), -clip, clip))
    mean, sd = NORMS_ML["BrainSegNotVent"][:2]
    own = math.sqrt(max(0.0, 1 - variation.size_weight ** 2 - variation.pair_weight ** 2))
    targets = {}
    for base in ("Thalamus", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "Accumbens-area"):
        shared = rng.standard_normal()
        for side in ("Left", "Right"):
            name = f"{side}-{base}"
            z = variation.size_weight * size + variation.pair_weight * shared + own * rng.standard_normal()
            m, s = NORMS_ML[name][:2]
            targets[name] = m + s * float(np.clip(z, -clip, clip))
    return mean + sd * size, targets


def _rotation(rng: np.random.Generator, variation: Variation) -> np.ndarray:
    angles = np.deg2rad(np.clip(rng.normal(0, variation.rotation_sd_deg, 3), -variation.rotation_clip_deg, variation.rotation_clip_deg))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class _Warp:
    """Output -> source map: y = exp(-v)(c + M^-1 (x - c)), with M = rotation * scale * (mirror)."""

    matrix: np.ndarray
    centre: np.ndarray
    inverse: torch.Tensor  # displacement of exp(-v) on the source's coarse grid
    grid: Volume
    min_jacobian: float


def _fit_warp(anatomy: Anatomy, rng: np.random.Generator, flip: bool, variation: Variation) -> Tuple[_Warp, Dict[str, Any]]:
    """Draw the subject's targets and find a velocity field and affine that meet them."""
    brain_target, targets = _volume_targets(rng, variation)
    # the mirror comes after the warp: the source's left structure becomes the subject's right one
    other = lambda n: n.replace("Left-", "Right-") if n.startswith("Left-") else n.replace("Right-", "Left-")  # noqa: E731
    wanted = {n: targets[other(n) if flip else n] for n in STRUCTURES}
    grid = anatomy.coarse
    spacing = grid.spacing[0]
    # Smooth noise: random plane waves (stationary, no edge effects), one field per component.
    waves = rng.integers(2 ** 31, size=3)
    random_v = np.stack([head.smooth_random_field(grid, int(w), variation.warp_wavelength_mm) for w in waves])
    random_v = torch.from_numpy(random_v * np.float32(variation.warp_rms_mm / math.sqrt(3)))
    points = _grid_points(grid)
    names = list(STRUCTURES)
    centres = [anatomy.points[n].mean(axis=0).astype(np.float64) for n in names]
    sigmas = [max(variation.bump_min_mm, 1.2 * (3 * anatomy.ml[n] * 1000 / (4 * math.pi)) ** (1 / 3)) for n in names]
    bumps = []  # radial velocity around each structure: expands (a > 0) or shrinks it, fading with distance
    response = np.zeros((len(names), len(names)))  # d ln(volume of s) / d a_t, from the bumps' divergence
    for t, (centre, sigma) in enumerate(zip(centres, sigmas)):
        offset = points - torch.from_numpy(centre.astype(np.float32))
        weight = torch.exp(-(offset ** 2).sum(dim=1) / (2 * sigma ** 2))
        bumps.append((offset * weight[:, None]).T.reshape((3,) + grid.array.shape))
        for s_, n in enumerate(names):
            r2 = ((anatomy.points[n] - centre) ** 2).sum(axis=1) / sigma ** 2
            response[s_, t] = float(np.mean(np.exp(-r2 / 2) * (3 - r2)))
    bumps_t = torch.stack(bumps)
    rotation = _rotation(rng, variation)
    aniso = rng.normal(0, variation.anisotropy_sd, 3)
    aniso -= aniso.mean()  # shape only; size is set by the brain target
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    det_scale = brain_target / anatomy.brain_ml
    solve = lambda gap: torch.from_numpy(np.linalg.solve(response, gap).astype(np.float32))  # noqa: E731
    a = solve(np.log([wanted[n] / (det_scale * anatomy.ml[n]) for n in names]))
    structure_points = {n: torch.from_numpy(p) for n, p in anatomy.points.items()}
    brain_points = torch.from_numpy(anatomy.brain_points)
    for _ in range(variation.fit_steps):  # Newton-like steps on the Jacobian-predicted volumes
        velocity = random_v + (a[:, None, None, None, None] * bumps_t).sum(dim=0)
        forward = _exponential(velocity, grid, variation.squarings)
        jac = _jacobian_determinant(forward, spacing)[None]
        predicted = {n: float(_sample(jac, grid, p).sum()) * anatomy.ml[n] / len(p) for n, p in structure_points.items()}
        brain = float(_sample(jac, grid, brain_points).sum()) * anatomy.brain_step_ml
        det_scale = brain_target / brain
        a += solve(np.log([wanted[n] / (det_scale * predicted[n]) for n in names]))
    velocity = random_v + (a[:, None, None, None, None] * bumps_t).sum(dim=0)
    scale = det_scale ** (1 / 3)
    matrix = rotation @ np.diag(scale * np.exp(aniso)) @ mirror
    inverse = _exponential(-velocity, grid, variation.squarings)
    inverse_jac = _jacobian_determinant(inverse, spacing)  # det of the forward map = 1 / det of the inverse
    if float(inverse_jac.min()) <= 0:
        raise RuntimeError("the warp folded (non-positive Jacobian); the variation settings are too strong")
    jacobian_range = (1 / float(inverse_jac.max()), 1 / float(inverse_jac.min()))
    warp = _Warp(matrix, anatomy.centre, inverse, grid, jacobian_range[0])
    info = {"scale": round(scale, 4), "brain_target_ml": round(brain_target, 1),
            "targets_ml": {n: round(t, 3) for n, t in targets.items()},
            "rotation_deg": np.round(np.rad2deg([math.atan2(rotation[2, 1], rotation[2, 2]), -math.asin(rotation[2, 0]),
                                                math.atan2(rotation[1, 0], rotation[0, 0])]), 2).tolist(),
            "min_jacobian": round(jacobian_range[0], 4), "max_jacobian": round(jacobian_range[1], 4)}
    return warp, info


def _head_model(scale: float) -> head.HeadModel:
    """The adult head model with every length divided by ``scale`` (it is warped by ``scale`` later)."""
    model = head.HeadModel()
    changes = {}
    for field in dataclasses.fields(model):
        value = getattr(model, field.name)
        if isinstance(value, head.Layer):
            changes[field.name] = head.Layer(*(getattr(value, f) / scale for f in ("mean", "sd", "low", "high")))
        else:
            changes[field.name] = value / scale
    return dataclasses.replace(model, **changes)


@functools.lru_cache(maxsize=16)
def _head_template(name: str, variant: int, resolution: float) -> Tuple[Volume, torch.Tensor]:
    """Head labels around a source brain (CSF, skull, scalp), built once per variant and resolution."""
    anatomy = load_source(name)
    brain = anatomy.brain
    if not np.allclose(brain.spacing, resolution):
        image = brain.to_image()
        size = [int(math.ceil(n * s / resolution)) for n, s in zip(image.GetSize(), image.GetSpacing())]
        image = sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor, image.GetOrigin(),
                              (resolution,) * 3, image.GetDirection(), 0)
        brain = Volume.from_image(image)
    scale = (NORMS_ML["BrainSegNotVent"][0] / anatomy.brain_ml) ** (1 / 3)
    template = head.add_head_layers(brain, seed=(7919, variant), model=_head_model(scale))
    template = head.crop_to_foreground(template, margin_mm=resolution)
    return template, torch.from_numpy(template.array.astype(np.float32))[None]


def _output_grid(template: Volume, warp: _Warp, resolution: float, fov_mm: Sequence[float]) -> Volume:
    """A fixed field of view (same shape for every subject) centred on the warped head."""
    nk, nj, ni = template.array.shape
    centre = np.asarray(template.origin) + (np.array([ni, nj, nk]) - 1) / 2 * np.asarray(template.spacing)
    centre = warp.centre + warp.matrix @ (centre - warp.centre)
    n = [int(math.ceil(f / resolution - 1e-6)) for f in fov_mm]
    origin = centre - (np.array(n) - 1) / 2 * resolution
    return Volume(np.zeros(n[::-1], np.uint8), (resolution,) * 3, tuple(origin.tolist()), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _vote(anatomy: Anatomy, y: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Brain labels at points ``y`` [N, 3] when an output voxel spans several source voxels: the most
    frequent label among 8 sub-voxel samples (``offsets``, source mm) and the centre, which counts
    1.5 so it breaks ties. Nearest neighbour alone would make small structures' volumes noisy."""
    samples = torch.stack([_sample(anatomy.labels[0], anatomy.brain, y + o, "nearest", "zeros")[0] for o in offsets]
                          + [_sample(anatomy.labels[0], anatomy.brain, y, "nearest", "zeros")[0]])
    values, inverse = torch.unique(samples, return_inverse=True)
    weights = torch.ones_like(samples)
    weights[-1] = 1.5
    votes = torch.zeros(len(values), samples.shape[1]).scatter_add_(0, inverse, weights)
    return values[votes.argmax(dim=0)]


def _warp_labels(anatomy: Anatomy, template: Volume, template_t: torch.Tensor, warp: _Warp, out: Volume, flip: bool) -> np.ndarray:
    """Labels on ``out``: brain from the 1 mm source (voted when the output is coarser), head layers from the
    template (nearest neighbour)."""
    nk, nj, ni = out.array.shape
    step = out.spacing[0] / 4  # sub-voxel centres at +-1/4 voxel, mapped to the source by the affine part
    corners = torch.tensor([[a, b, c] for a in (-step, step) for b in (-step, step) for c in (-step, step)])
    offsets = corners @ torch.from_numpy(np.linalg.inv(warp.matrix).astype(np.float32)).T
    coarser = out.spacing[0] > 1.25 * max(anatomy.brain.spacing)
    labels = np.zeros((nk, nj, ni), np.int32)
    inverse_matrix = torch.from_numpy(np.linalg.inv(warp.matrix).astype(np.float32))
    centre = torch.from_numpy(warp.centre.astype(np.float32))
    ys, xs = torch.meshgrid(torch.arange(nj, dtype=torch.float32) * out.spacing[1] + out.origin[1],
                            torch.arange(ni, dtype=torch.float32) * out.spacing[0] + out.origin[0], indexing="ij")
    plane = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    slab = max(1, (250_000 if coarser else 2_000_000) // (nj * ni))
    for k0 in range(0, nk, slab):  # slabs keep memory flat at any resolution
        zs = torch.arange(k0, min(nk, k0 + slab), dtype=torch.float32) * out.spacing[2] + out.origin[2]
        x = torch.cat([plane.repeat(len(zs), 1), zs.repeat_interleave(len(plane))[:, None]], dim=1)
        z = centre + (x - centre) @ inverse_matrix.T
        y = z + _sample(warp.inverse, warp.grid, z).T
        brain = _vote(anatomy, y, offsets) if coarser else _sample(anatomy.labels[0], anatomy.brain, y, "nearest", "zeros")[0]
        outer = _sample(template_t, template, y, "nearest", "zeros")[0]
        is_head = torch.zeros_like(outer, dtype=torch.bool)
        for label in head.HEAD_LABEL_NAMES:
            is_head |= outer == label
        # brain wins; a template voxel that is brain only at the coarser resolution becomes sulcal CSF
        chunk = torch.where(brain > 0, brain, torch.where(is_head, outer, torch.where(outer > 0, float(head.CSF_EXTRACEREBRAL), 0.0)))
        labels[k0:k0 + len(zs)] = chunk.round().to(torch.int32).reshape(len(zs), nj, ni).numpy()
    return left_right_swap_lut()[labels] if flip else labels


# --------------------------------------------------------------------------- relaxation


def _triangular_quantile(u: float, low: float, mode: float, high: float) -> float:
    cut = (mode - low) / (high - low)
    if u < cut:
        return low + math.sqrt(u * (high - low) * (mode - low))
    return high - math.sqrt((1 - u) * (high - low) * (high - mode))


def draw_relaxation(rng: np.random.Generator, field: float, shared: float = 0.7, pd_sd: float = 0.03,
                    margin: float = 0.05) -> Dict[str, Tuple[float, float, float]]:
    """Per-subject (T1, T2, PD) of every tissue of the table at ``field``.

    T1 and T2 come from a triangular distribution peaked at the table's typical value
    on its literature range less a margin at each end (10 % of the range, at least
    ``margin`` of the value: room for the smooth within-tissue field of
    :class:`.head.MapVariation`, 2.5 % sd); where the range is too narrow for that
    (muscle), the typical value is taken. A subject-wide component
    (weight ``shared``) correlates the tissues, as a scanner or mapping method
    shifts all of them together. The table gives no PD range: PD varies by an
    assumed ``pd_sd`` (relative), capped at 1.
    """
    normal = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    common = rng.standard_normal(3)
    own = math.sqrt(1 - shared ** 2)
    values = {}
    for tissue in sorted(TISSUES):
        row = TISSUES[tissue][float(field)]
        drawn = []
        for n, (typical, (low, high)) in enumerate(((row.t1, row.t1_range), (row.t2, row.t2_range))):
            gap = max(0.1 * (high - low), margin * typical)
            u = normal(shared * common[n] + own * rng.standard_normal())  # drawn even when unused: streams stay aligned
            if high - low <= 2 * gap:
                drawn.append(typical)
            else:
                inner_low, inner_high = low + gap, high - gap
                drawn.append(_triangular_quantile(u, inner_low, min(max(typical, inner_low), inner_high), inner_high))
        pd = min(1.0, row.pd * (1 + pd_sd * float(np.clip(shared * common[2] + own * rng.standard_normal(), -2.5, 2.5))))
        values[tissue] = (round(drawn[0], 2), round(drawn[1], 3), round(pd, 4))
    return values


def _smooth_field(grid: Volume, seed: Sequence[int], wavelength_mm: float) -> np.ndarray:
    """:func:`head.smooth_random_field` computed on a ~8 mm grid and interpolated (it is smooth at 80 mm)."""
    nk, nj, ni = grid.array.shape
    extent = (np.array([ni, nj, nk]) - 1) * np.asarray(grid.spacing)
    n = np.maximum(2, np.ceil(extent / 8.0).astype(int) + 1)
    coarse = Volume(np.zeros(n[::-1], np.uint8), tuple((extent / (n - 1)).tolist()), grid.origin, grid.direction)
    values = torch.from_numpy(head.smooth_random_field(coarse, seed, wavelength_mm))[None, None]
    return F.interpolate(values, size=(nk, nj, ni), mode="trilinear", align_corners=True)[0, 0].numpy()


def _maps(labels: Volume, values: Mapping[str, Tuple[float, float, float]], seed: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2, PD with partial volume and smooth within-tissue variation."""
    index, names = head.tissue_index(labels.array, head.HEAD_TISSUE)
    t1, t2, pd = head.mix_partial_volume(index, labels.spacing, [values[n] for n in names])
    in_head = index != 0
    variation = head.MapVariation()
    for n, (array, sd) in enumerate(((t1, variation.t1), (t2, variation.t2), (pd, variation.pd))):
        g = np.clip(_smooth_field(labels, (*seed, 2, n), variation.wavelength_mm), -variation.clip_sd, variation.clip_sd)
        array[in_head] *= 1 + np.float32(sd) * g[in_head]
    np.minimum(pd, 1.0, out=pd)
    return t1, t2, pd


def _quantize(labels: np.ndarray, maps: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Maps rounded to 1/8 ms (T1, T2) and 1/1024 (PD): binary fractions, exact in float32, so the files
    compress about twice as well; inside the head nothing rounds to 0."""
    in_head = labels != 0
    out = []
    for array, step in zip(maps, (8.0, 8.0, 1024.0)):
        array = np.round(np.asarray(array, dtype=np.float32) * step) / step
        array[in_head] = np.maximum(array[in_head], 1 / step)
        array[~in_head] = 0
        out.append(array.astype(np.float32))
    return out


# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class SubjectSpec:
    """Everything that decides a subject; ``seed`` is unique to (split seed, split, index)."""

    id: str
    split: str
    index: int
    seed: int
    source: str
    field: float
    lesion: Optional[str]


@dataclass
class Subject:
    """A generated subject: maps (T1, T2 in ms, PD fraction), labels, lesion mask, and its record."""

    spec: SubjectSpec
    labels: Volume
    t1: Volume
    t2: Volume
    pd: Volume
    lesions: Optional[Volume]
    record: Dict[str, Any]


def _subject_seed(seed: int, split: str, index: int) -> int:
    # Injective: distinct (seed, split, index) give distinct integers, so splits can never share a seed.
    if seed < 0 or not 0 <= index < 2 ** 32:
        raise InputError("seed must be >= 0 and the index < 2**32")
    return (int(seed) << 35) | (_SPLIT_CODE[split] << 32) | int(index)


def _lesion_kinds() -> Tuple[str, ...]:
    try:
        from .lesions import LESION_KINDS
    except ImportError:
        return ()
    return tuple(LESION_KINDS)


def plan_split(split: str, count: int, seed: int = 0, field: Optional[float] = None, lesions: str = "none",
               sources: Optional[Sequence[str]] = None) -> List[SubjectSpec]:
    """The subjects of a split, without generating them (cheap; the manifest's skeleton)."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if count < 1:
        raise InputError("count must be at least 1")
    if split == "external":
        if sources and tuple(sources) != EXTERNAL_SOURCES:
            raise InputError(f"the external split always uses {', '.join(EXTERNAL_SOURCES)}; drop --sources")
        chosen, default_field = EXTERNAL_SOURCES, EXTERNAL_FIELD
        if field is not None and float(field) == INTERNAL_FIELD:
            raise InputError(f"the external split must differ from training in field strength ({INTERNAL_FIELD:g} T)")
    else:
        chosen, default_field = tuple(sources or INTERNAL_SOURCES), INTERNAL_FIELD
        external = {SOURCES[s].anatomy for s in EXTERNAL_SOURCES}
        clash = [s for s in chosen if source_spec(s).anatomy in external]
        if clash:
            raise InputError(f"{', '.join(clash)} is the external anatomy; it may not feed {split}")
    for name in chosen:
        if not source_available(name):
            raise InputError(f"anatomy source {name!r} ({source_spec(name).description}) is not here; fetch it once with: "
                             f"syntheticmri phantom --fetch-sources {name}")
    field = float(default_field if field is None else field)
    if field not in FIELD_STRENGTHS:
        raise InputError(f"field strength {field:g} T: the tissue table has {', '.join(f'{f:g}' for f in FIELD_STRENGTHS)} T")
    kinds = _lesion_kinds()
    if lesions not in ("none", "mixed") + kinds:
        raise InputError(f"unknown lesion kind {lesions!r}; use none, mixed (one kind or none per subject) or "
                         f"{', '.join(kinds) or 'a kind of SyntheticMRILib.phantoms.lesions (not available)'}")
    specs = []
    for index in range(count):
        subject_seed = _subject_seed(seed, split, index)
        rng = _rng((subject_seed,), 1)
        source = chosen[int(rng.integers(len(chosen)))]
        lesion = None if lesions == "none" else lesions
        if lesions == "mixed":
            lesion = ([None] + list(kinds))[int(rng.integers(len(kinds) + 1))]
        specs.append(SubjectSpec(f"{split}-s{seed}-{index:04d}", split, index, subject_seed, source, field, lesion))
    return specs


def generate_subject(spec: SubjectSpec, resolution: float = 1.0, variation: Variation = VARIATION,
                     timings: Optional[Dict[str, float]] = None) -> Subject:
    """Make one subject (deterministic in ``spec``). ``timings`` collects seconds per step."""
    timings = {} if timings is None else timings
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - clock[0]
        clock[0] = now

    if not 0.5 <= resolution <= 4.0:
        raise InputError("resolution must be between 0.5 and 4 mm")
    anatomy = load_source(spec.source)
    lap("load source")
    rng = _rng((spec.seed,), 2)
    flip = bool(rng.random() < variation.flip_probability)
    variant = int(rng.integers(variation.head_variants))
    template, template_t = _head_template(spec.source, variant, float(resolution))
    lap("head template (cached)")
    warp, info = _fit_warp(anatomy, _rng((spec.seed,), 3), flip, variation)
    lap("fit deformation")
    grid = _output_grid(template, warp, resolution, variation.fov_mm)
    labels = grid.with_array(_warp_labels(anatomy, template, template_t, warp, grid, flip).astype(np.uint16))
    lap("warp labels")
    relax = draw_relaxation(_rng((spec.seed,), 4), spec.field)
    t1, t2, pd = _maps(labels, relax, (spec.seed, 5))
    lap("maps")
    mask = None
    if spec.lesion:
        from .lesions import add_lesions

        t1, t2, pd, mask = add_lesions(labels.array, t1, t2, pd, labels.spacing, spec.lesion, _rng((spec.seed,), 6), spec.field)
        mask = labels.with_array(np.asarray(mask, dtype=np.uint8))
        lap("lesions")
    t1, t2, pd = _quantize(labels.array, (t1, t2, pd))
    volumes = structure_volumes(labels.array, labels.spacing)
    lap("volumes")
    source = SOURCES[spec.source]
    record = {
        "id": spec.id, "split": spec.split, "index": spec.index, "seed": spec.seed, "source": spec.source,
        "anatomy": source.anatomy, "field_strength": spec.field, "flip": flip, "lesion": spec.lesion,
        "head_variant": variant, "resolution_mm": float(resolution), "shape": list(labels.array.shape),
        **info, "relaxation": {k: list(v) for k, v in relax.items()}, "volumes_ml": volumes,
        "lesion_ml": round(float(mask.array.astype(bool).sum()) * float(np.prod(labels.spacing)) / 1000, 3) if mask else 0.0,
    }
    return Subject(spec, labels, labels.with_array(t1), labels.with_array(t2), labels.with_array(pd), mask, record)


def write_subject(subject: Subject, folder: Path, overwrite: bool = False) -> Dict[str, str]:
    """``folder/<id>/{t1,t2,pd,labels}.nrrd`` (+ ``lesions.nrrd``); returns the paths relative to ``folder``."""
    files = {}
    volumes = {"t1": subject.t1, "t2": subject.t2, "pd": subject.pd, "labels": subject.labels, "lesions": subject.lesions}
    for name, volume in volumes.items():
        if volume is None:
            continue
        relative = f"{subject.spec.id}/{name}.nrrd"
        write_volume(volume, folder / relative, overwrite=overwrite)
        files[name] = relative
    return files


def write_split(output: PathLike, split: str, count: int, seed: int = 0, field: Optional[float] = None,
                lesions: str = "none", resolution: float = 1.0, sources: Optional[Sequence[str]] = None,
                overwrite: bool = False, progress: bool = True) -> Path:
    """Generate a split into ``output`` (one folder per subject) and write ``manifest.json``; return its path."""
    output = check_output_folder(output, overwrite)
    specs = plan_split(split, count, seed, field, lesions, sources)  # every check before any work
    from tqdm import tqdm

    subjects = []
    for spec in tqdm(specs, desc=f"{split} phantoms", unit="subject", disable=not progress):
        subject = generate_subject(spec, resolution)
        subject.record["files"] = write_subject(subject, output, overwrite)
        subjects.append(subject.record)
    used = sorted({s["source"] for s in subjects})
    manifest = {
        "generator": f"SyntheticMRILib.phantoms.generator {__version__}", "split": split, "seed": seed, "count": count, "lesions": lesions,
        "resolution_mm": resolution, "units": {"t1": "ms", "t2": "ms", "pd": "fraction of water"},
        "sources": {n: {"package": SOURCES[n].package or "bundled", "member": SOURCES[n].member,
                        "licence": SOURCES[n].licence, "may_be_shipped": SOURCES[n].shippable} for n in used},
        "source_order": list(EXTERNAL_SOURCES if split == "external" else (sources or INTERNAL_SOURCES)),
        "volume_norms": NORMS_SOURCE, "variation": dataclasses.asdict(VARIATION), "subjects": subjects,
    }
    return write_manifest(output, manifest)
