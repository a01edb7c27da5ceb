"""Domain randomization in the physics domain: the maps a segmenter trains on, drawn as another scanner, another
mapping method and another subject would give them (SynthSeg's lesson, with relaxation times instead of grey levels).

A phantom's label map is turned into tissue numbers once (:func:`tissue_numbers`); each draw then gives every
tissue its own T1, T2 and PD (:meth:`MapRandomizer.values`) and renders maps from them (:meth:`MapRandomizer.render`):
thick slices, partial volume, a lower in-plane resolution, smooth multiplicative fields, within-tissue texture and
noise as a mapping sequence leaves it. The ranges, with their reasons, are the fields of :class:`Randomization`.

Why these ranges. The same brain mapped by SyMRI/MAGiC, MR fingerprinting, inversion recovery or variable flip
angle (DESPOT1) differs by 10-30 % in T1 and T2 (Stikov et al., MRM 2015;73:514-522, T1 of white matter from
different methods at 3 T; Bojorquez et al., MRI 2017;35:69-80, the spread of published 3 T values), 1.5 T vs 3 T
moves every T1 by 15-25 % (the table of :mod:`SyntheticMRILib.physics.tissues`), deep grey matter T1 and T2 fall
with age and iron (Gelman 1999/2001, in the same table), and a B1 error makes a smooth field of several percent in
a variable-flip-angle T1 map. So a draw scales all tissues together (the method and field) and each tissue on its
own (the subject and the method's tissue bias), and adds a smooth field to each map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..phantoms.head import HEAD_TISSUE, TISSUE_NAMES
from ..physics.tissues import FIELD_STRENGTHS, FREESURFER_TISSUE, relaxation

__all__ = ["TISSUE_NAMES", "ROWS", "MAX_SLICES", "tissue_numbers", "volume_weights", "Randomization", "MapRandomizer",
           "randomized_maps"]

# Tissue number 1 + n is TISSUE_NAMES[n] inside the brain, 1 + len(TISSUE_NAMES) + n outside it (the head layers: the
# same tissues, removed when a draw's maps are skull-stripped); 0 is background.
ROWS = 1 + 2 * len(TISSUE_NAMES)
_REFERENCE = (1000.0, 100.0, 1.0)  # T1, T2 (ms), PD at which the map noise has its nominal relative sd


def tissue_numbers(labels: np.ndarray) -> np.ndarray:
    """The tissue number (uint8, see :data:`TISSUE_NAMES`) of every voxel of a FreeSurfer/head label map; a label of
    no known tissue is an :class:`InputError`."""
    unknown = sorted(set(np.unique(labels).tolist()) - set(HEAD_TISSUE) - {0})
    if unknown:
        raise InputError(f"labels without a tissue: {unknown[:20]}")
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    for label, tissue in HEAD_TISSUE.items():
        if label < len(lut):
            lut[label] = 1 + TISSUE_NAMES.index(tissue) + (0 if label in FREESURFER_TISSUE else len(TISSUE_NAMES))
    return lut[labels.astype(np.int64)]


@dataclass(frozen=True)
class Randomization:
    """The ranges of one draw; each pair is (low, high) of a uniform draw (log-uniform for the relative factors).

    Args:
        subject_t1, subject_t2, subject_pd: one factor for every tissue of a draw (mapping method, field, scanner).
        tissue_t1, tissue_t2, tissue_pd: an independent factor per tissue on top (subject, method's tissue bias).
        beyond: 0 for training; > 0 puts each subject factor outside its range by this share (a "stress" test).
        field_sd: log-sd of one smooth multiplicative field per map (B1 in VFA T1, B1/B0 in T2, receive in PD),
            knots every ``field_spacing_mm``.
        texture_sd: relative sd of within-tissue texture (noise smoothed over about a millimetre).
        noise: relative sd of map noise at T1 1 s / T2 100 ms / PD 1, growing as the square root of the value
            (long T1 and T2, as in CSF, are fitted worst), capped at 3x.
        pv_sigma_mm: Gaussian partial volume in-plane; in_plane_mm: acquired in-plane voxel; slice_mm: acquired
            axial slice thickness (the maps stay on the 1 mm grid, blurred as an interpolated thick-slice scan is).
        brain_only: share of draws whose maps are skull-stripped (delivered masked, as many mapping tools do).
        fields: the table's field strengths a draw starts from.

    Examples:
        >>> randomizer = MapRandomizer(Randomization())
        >>> values = randomizer.values(4, torch.Generator().manual_seed(0))  # [4, ROWS, 3]
    """

    subject_t1: Tuple[float, float] = (0.8, 1.25)
    subject_t2: Tuple[float, float] = (0.8, 1.25)
    subject_pd: Tuple[float, float] = (0.9, 1.1)
    tissue_t1: Tuple[float, float] = (0.87, 1.15)
    tissue_t2: Tuple[float, float] = (0.87, 1.15)
    tissue_pd: Tuple[float, float] = (0.95, 1.05)
    beyond: float = 0.0
    field_sd: Tuple[float, float] = (0.0, 0.1)
    field_spacing_mm: float = 64.0
    texture_sd: Tuple[float, float] = (0.0, 0.03)
    noise: Tuple[float, float] = (0.0, 0.04)
    pv_sigma_mm: Tuple[float, float] = (0.3, 0.8)
    in_plane_mm: Tuple[float, float] = (1.0, 1.5)
    slice_mm: Tuple[float, float] = (1.0, 5.0)
    brain_only: float = 0.25
    fields: Tuple[float, ...] = FIELD_STRENGTHS

    def stressed(self, beyond: float = 0.1, noise_factor: float = 2.0) -> "Randomization":
        """Tissue values outside the ranges by ``beyond`` and map noise ``noise_factor`` times stronger."""
        return replace(self, beyond=beyond, noise=(self.noise[0] * noise_factor, self.noise[1] * noise_factor))


MAX_SLICES = 5  # the thickest slice of a draw, in 1 mm slices: the slab a training crop brings


def _uniform(low: float, high: float, shape, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _log_uniform(bounds: Tuple[float, float], shape, generator: torch.Generator) -> torch.Tensor:
    return torch.exp(_uniform(math.log(bounds[0]), math.log(bounds[1]), shape, generator))


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return kernel / kernel.sum()


def _blur_in_plane(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian over the last two axes of ``[N, C, H, W]`` (reflected edges)."""
    kernel = _gaussian_kernel(sigma).to(x.device)
    r, c = len(kernel) // 2, x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class MapRandomizer:
    """Draws tissue values and renders T1, T2 (ms) and PD maps from tissue numbers; seeded by the caller's generator.

    Args:
        randomization: the ranges (:class:`Randomization`).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> randomizer = MapRandomizer()
        >>> t1, t2, pd = randomizer.render(tissues, randomizer.values(len(tissues), g), g)  # tissues [B, D, H, W]
    """

    def __init__(self, randomization: Randomization = Randomization()) -> None:
        self.randomization = randomization
        self._typical = torch.tensor([[[relaxation(name, field).t1, relaxation(name, field).t2, relaxation(name, field).pd]
                                       for name in TISSUE_NAMES] for field in randomization.fields], dtype=torch.float64)

    def _subject_factor(self, bounds: Tuple[float, float], count: int, generator: torch.Generator) -> torch.Tensor:
        if self.randomization.beyond <= 0:
            return _log_uniform(bounds, (count, 1), generator)
        low = torch.rand((count, 1), generator=generator) < 0.5  # which side of the range
        outside = 1 + self.randomization.beyond
        return torch.where(low, torch.full((count, 1), bounds[0] / outside, dtype=torch.float64),
                           torch.full((count, 1), bounds[1] * outside, dtype=torch.float64))

    def values(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``[count, ROWS, 3]`` float64: T1, T2 (ms), PD of every tissue number for ``count`` independent draws;
        row 0 (background) is 0, and so are the head layers of a skull-stripped draw."""
        r, n = self.randomization, len(TISSUE_NAMES)
        field = torch.randint(len(r.fields), (count,), generator=generator)
        typical = self._typical[field]  # [count, n, 3]
        factors = []
        for subject, tissue in ((r.subject_t1, r.tissue_t1), (r.subject_t2, r.tissue_t2), (r.subject_pd, r.tissue_pd)):
            factors.append(self._subject_factor(subject, count, generator) * _log_uniform(tissue, (count, n), generator))
        brain = typical * torch.stack(factors, dim=-1)
        brain[..., 2].clamp_(max=1.0)
        brain[..., 1] = torch.minimum(brain[..., 1], brain[..., 0])  # T2 <= T1
        stripped = (torch.rand(count, generator=generator) < r.brain_only).view(count, 1, 1)
        outside = torch.where(stripped, torch.zeros_like(brain), brain)
        return torch.cat([torch.zeros(count, 1, 3, dtype=brain.dtype), brain, outside], dim=1)

    def render(self, tissues: torch.Tensor, values: torch.Tensor, generator: torch.Generator) -> Tuple[torch.Tensor, ...]:
        """T1, T2, PD ``[B, D, H, W]`` float32 (1 mm voxels, axial slices along D) of tissue numbers ``[B, D, H, W]``
        with the tissue values ``[B, ROWS, 3]`` of :meth:`values`; background is exactly 0 in all three."""
        r = self.randomization
        b = tissues.shape[0]
        table = values.to(torch.float32)
        flat = tissues.long().flatten(1)
        t1, t2, pd = (torch.gather(table[..., c], 1, flat).view(tissues.shape) for c in range(3))
        head = (pd > 0).float()
        # Partial volume in rates (R1 = 1/T1 mixes linearly), then the acquisition: slice profile, in-plane voxel.
        stack = torch.stack([head, head / t1.clamp(min=1e-3), head / t2.clamp(min=1e-3), pd], dim=1)  # [B, 4, D, H, W]
        thickness = int(round(float(_uniform(*r.slice_mm, (), generator))))
        if thickness > 1:
            kernel = torch.zeros(thickness, dtype=stack.dtype)
            kernel[:] = 1.0 / thickness
            left = (thickness - 1) // 2
            padded = F.pad(stack.flatten(0, 1), (0, 0, 0, 0, left, thickness - 1 - left), mode="replicate")
            stack = sum(kernel[j] * padded[:, j:j + tissues.shape[1]] for j in range(thickness)).view(stack.shape)
        d, h, w = tissues.shape[1:]
        planes = stack.permute(0, 2, 1, 3, 4).reshape(b * d, 4, h, w)
        planes = _blur_in_plane(planes, float(_uniform(*r.pv_sigma_mm, (), generator)))
        voxel = float(_uniform(*r.in_plane_mm, (), generator))
        if voxel > 1.0:
            low = [max(1, int(round(n / voxel))) for n in (h, w)]
            planes = F.interpolate(F.interpolate(planes, size=low, mode="area"), size=(h, w), mode="bilinear", align_corners=False)
        stack = planes.view(b, d, 4, h, w).permute(0, 2, 1, 3, 4)
        head, rate1, rate2, pd = stack.unbind(1)
        inside = head > 0.5
        maps = [torch.where(inside, head / rate1.clamp(min=1e-9), 0), torch.where(inside, head / rate2.clamp(min=1e-9), 0),
                torch.where(inside, pd, 0)]
        # What the mapping method adds: a smooth field, texture and noise per map.
        per_draw = lambda bounds: _uniform(*bounds, (b, 1, 1, 1), generator).float()  # noqa: E731
        for c in range(3):
            field = self._smooth_field((b, d, h, w), generator) * per_draw(r.field_sd)
            texture = _blur_in_plane(torch.randn((b * d, 1, h, w), generator=generator), 1.0).view(b, d, h, w)
            texture = texture / texture.std().clamp(min=1e-6) * per_draw(r.texture_sd)
            scale = torch.sqrt((maps[c] / _REFERENCE[c]).clamp(max=9.0))
            noise = torch.randn((b, d, h, w), generator=generator) * per_draw(r.noise) * scale
            maps[c] = maps[c] * torch.exp(field) * (1 + texture + noise).clamp(min=0.2)
        t1, t2, pd = maps
        t2 = torch.minimum(t2, t1)
        pd = pd.clamp(max=1.0)
        return t1, t2, pd

    def _smooth_field(self, shape: Tuple[int, int, int, int], generator: torch.Generator) -> torch.Tensor:
        """A unit-sd smooth random field ``[B, D, H, W]`` with knots every ``field_spacing_mm`` (1 mm voxels)."""
        b = shape[0]
        knots = [max(2, int(math.ceil(n / self.randomization.field_spacing_mm)) + 1) for n in shape[1:]]
        values = torch.randn((b, 1, *knots), generator=generator)
        return F.interpolate(values, size=shape[1:], mode="trilinear", align_corners=True)[:, 0]


def randomized_maps(labels: np.ndarray, randomization: Randomization, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2, PD ``[k, j, i]`` float32 of a whole label volume (1 mm, axial along k) drawn by ``randomization``:
    the randomized and stress splits of an evaluation. Deterministic in ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    randomizer = MapRandomizer(randomization)
    tissues = torch.from_numpy(tissue_numbers(labels))[None]
    t1, t2, pd = randomizer.render(tissues, randomizer.values(1, generator), generator)
    return tuple(m[0].numpy() for m in (t1, t2, pd))  # type: ignore[return-value]


def volume_weights(numbers: np.ndarray) -> np.ndarray:
    """How many voxels of a volume hold each tissue number (``[ROWS]``): with a draw's values, the exact head mean of
    the volume's unblurred signal, which is what the segmenter normalizes by (see ``SegmentationModel.scale``)."""
    return np.bincount(numbers.ravel(), minlength=ROWS)[:ROWS].astype(np.float64)
