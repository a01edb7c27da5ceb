"""Lesions in head phantoms: MS-like white-matter lesions, a glioma-like tumour, lacunes.

One call puts one kind of pathology into a phantom's quantitative maps::

    from SyntheticMRILib.phantoms.lesions import LESION_KINDS, add_lesions
    t1, t2, pd, mask = add_lesions(labels, t1, t2, pd, spacing, "ms", rng, 3.0)

``labels`` is a FreeSurfer aseg label map (array ``[k, j, i]``, head labels such
as 257 / 165 allowed), ``t1``/``t2`` in ms and ``pd`` as a fraction of water on
the same grid, ``spacing`` the ITK (i, j, k) spacing in mm, ``rng`` a
``numpy.random.Generator`` (everything random is drawn from it: same generator
state, same lesions, bit for bit) and ``field`` 1.5 or 3 tesla. The inputs are
never modified; new float32 maps come back with a uint8 ``mask`` holding the
kind's value (:data:`MASK_VALUES`) on lesion voxels and 0 elsewhere. Voxels of
the maps outside a lesion and its soft (partial-volume) edge are returned
unchanged, bit for bit. Labels are not changed: a lesion is a property of the
maps, the anatomy stays the anatomy.

=====  ==========  ===========================================================
value  kind        what
=====  ==========  ===========================================================
  1    ``ms``      multiple-sclerosis-like white-matter lesions: 3-25 of them,
                   3-15 mm, periventricular (some ovoid and perpendicular to
                   the ventricles: Dawson's fingers), deep, juxtacortical and
                   infratentorial; prolonged T1 and T2, raised PD; some with a
                   T1-prolonged "black hole" core
  2    ``tumour``  one glioma-like mass: necrotic core, solid (enhancing-rim-
                   like) shell and vasogenic oedema spreading in the white
                   matter; no mass effect (nothing is displaced)
  3    ``lacune``  1-6 lacunes of presumed vascular origin: CSF-like cavities
                   of 3-15 mm in deep grey matter and deep white matter with a
                   gliotic rim
=====  ==========  ===========================================================

Where lesions may lie (FreeSurfer labels; anything else, and in particular CSF,
ventricles, choroid plexus, vessels and the head outside the brain, is never
touched):

* ``ms``: cerebral white matter (2, 41), WM hypointensities (77), corpus
  callosum (251-255), cerebellar white matter (7, 46) and the brain stem (16,
  which in aseg is mostly white-matter tracts: pons, peduncles, medulla).
* ``tumour``: supratentorial parenchyma (cerebral WM and cortex, deep grey
  nuclei, hippocampus, amygdala, ventral DC); its oedema only in cerebral WM.
* ``lacune``: thalamus, caudate, putamen, pallidum and cerebral white matter.

How the values are made (one table, :data:`MS_CHANGES` and :data:`WATER`)
-------------------------------------------------------------------------

**MS lesions** change the relaxation *rates* and PD of the tissue they replace,
voxel by voxel, by relative amounts drawn per lesion from the distribution that
Hagiwara et al. [H] measured with SyMRI at 3 T in 21 patients (plaques vs
normal-appearing WM, mean +- sd): R1 -35.2 +- 13.9 %, R2 -21.1 +- 11.4 %,
PD +23.4 +- 10.3 %. One severity score per lesion drives all three (more
damage: more of each) plus a smooth within-lesion field, a little more severe
in the centre. Some larger lesions get a "black hole" core with R1 lowered by
50-65 % (the upper tail of [H]; chronic T1-hypointense lesions have the longest
T1 of MS lesions). Bounds: R1 -10 to -65 % (T1 x 1.11 to x 2.86), R2 -5 to
-45 % (T2 x 1.05 to x 1.82), PD +5 to +45 % (PD capped at 1). [H] is a 3 T
study; the same relative changes are used at 1.5 T (an assumption: the
lesion-to-WM contrast in R1 is of the same order at both fields).

**Tumour and lacunes** use a water-content model: the PD of a voxel is its
water fraction W, and each relaxation rate falls linearly with the water-to-
macromolecule ratio (fast exchange between free and bound water, Fullerton et
al. [F])::

    R = R_free + (R_tissue - R_free) * g(W_new) / g(W_tissue),   g(W) = (1 - W) / W

with R_free = 1 / T(CSF) of the tissue table at the field strength. Oedema
and the gliotic rim of a lacune raise the water of the voxel's own tissue
(R_tissue, W_tissue: its values in the input maps). Tumour tissue replaces what
was there: it takes the table's WM row with the tumour's water content (at
least the local tissue's + 0.03, so T1 and T2 only lengthen), mixed with the
surroundings by partial volume at its edge. The water contents are model
choices, not measured values; the T2 they give the necrotic centre is of the
order that T2 mapping found in the centre of WHO grade II/III gliomas [K]
(about 200-360 ms, means of subgroups). Lacune cavities hold CSF (the table's
``csf`` row), as lacunes follow CSF signal on every sequence [S], inside a
gliotic rim of raised water (hyperintense on FLAIR [S]).

Resulting values in tissue of the table's WM row (T1 / T2 in ms, PD)::

                               1.5 T                  3 T
    WM (tissues.py)            650 / 80 / 0.69        850 / 75 / 0.69
    MS lesion, mean of [H]     1003 / 101 / 0.85      1312 / 95 / 0.85
    MS lesion, bounds          T1 x1.11-2.86, T2 x1.05-1.82, PD x1.05-1.45 (<= 1)
    tumour, solid (W .83-.88)  1184-1538 / 167-241    1487-1883 / 157-228
    tumour, necrosis (.89-.94) 1629-2251 / 263-454    1981-2620 / 248-430
    oedema at the tumour edge  900-1309 / 118-192     1155-1629 / 111-180
    (W + .08-.16, falling off with distance over 4-12 mm, in WM only)
    lacune rim (W + .06-.12)   827-1076 / 106-148     1067-1363 / 100-139
    lacune cavity              CSF: 3800 / 2000 / 1   4000 / 2000 / 1

:func:`lesion_ranges` gives these ranges to tests and reports.

Geometry follows the radiology: MS lesions at the sites of the McDonald
criteria (periventricular, juxtacortical, infratentorial, plus deep WM) [T],
at least 3 mm long [FP] (MAGNIMS: lesions are counted from 3 mm), periventricular
ovoid lesions with their long axis perpendicular to the ventricular wall, along
the medullary veins (Dawson's fingers) [FP]; gliomas with the BraTS sub-regions
necrotic core, enhancing tumour and peritumoural oedema [B]; lacunes 3-15 mm,
round or ovoid, in the territory of a perforating arteriole [S]. Counts, sizes,
shapes and site weights are model choices within those limits.

Sources
~~~~~~~

H  Hagiwara A, Hori M, Yokoyama K, et al. Utility of a multiparametric
   quantitative MRI model that assesses myelin and edema for evaluating plaques,
   periplaque white matter, and normal-appearing white matter in patients with
   multiple sclerosis: a feasibility study. AJNR Am J Neuroradiol
   2017;38:237-242 (3 T, SyMRI/QRAPMASTER; the relative R1, R2, PD changes above
   are from its abstract).
F  Fullerton GD, Potter JL, Dornbluth NC. NMR relaxation of protons in tissues
   and other macromolecular water solutions. Magn Reson Imaging 1982;1(4).
   Relaxation rate linear in the macromolecule-to-water ratio.
K  T2 mapping of molecular subtypes of WHO grade II/III gliomas. BMC Neurology
   2020, doi:10.1186/s12883-019-1590-1 (central tumour T2 about 200-360 ms,
   periphery about 210 ms).
S  Wardlaw JM, Smith EE, Biessels GJ, et al. Neuroimaging standards for research
   into small vessel disease and its contribution to ageing and
   neurodegeneration (STRIVE). Lancet Neurol 2013;12:822-838.
T  Thompson AJ, Banwell BL, Barkhof F, et al. Diagnosis of multiple sclerosis:
   2017 revisions of the McDonald criteria. Lancet Neurol 2018;17:162-173.
FP Filippi M, Preziosa P, Banwell BL, et al. Assessment of lesions on magnetic
   resonance imaging in multiple sclerosis: practical guidelines. Brain
   2019;142:1858-1875.
B  Menze BH, Jakab A, Bauer S, et al. The multimodal brain tumor image
   segmentation benchmark (BRATS). IEEE Trans Med Imaging 2015;34:1993-2024.
M  Model choice of this module, within the limits of the sources above.

Speed: a 1 mm head of 7 M voxels takes well under 2 s per call on 2 CPU cores
(work is done on a 2 mm grid for site selection and in small boxes around each
lesion).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .head import distance_outside, aparc_to_aseg, gaussian_smooth, smooth_random_field
from ..physics.tissues import FIELD_STRENGTHS, relaxation
from ..io.volumes import Volume

__all__ = [
    "LESION_KINDS", "MASK_VALUES", "LESION_NAMES", "MS_CHANGES", "WATER", "Change",
    "MS_SITES", "TUMOUR_SITES", "OEDEMA_SITES", "LACUNE_SITES",
    "add_lesions", "lesion_ranges", "lesion_summary", "water_model",
]

LESION_KINDS: Tuple[str, ...] = ("ms", "tumour", "lacune")
MASK_VALUES: Dict[str, int] = {"ms": 1, "tumour": 2, "lacune": 3}
LESION_NAMES: Dict[int, str] = {
    1: "MS-like white-matter lesion",
    2: "glioma-like tumour (necrosis, solid shell, oedema)",
    3: "lacune (CSF-like cavity with gliotic rim)",
}
_ALIASES = {"tumor": "tumour", "glioma": "tumour", "lacunes": "lacune"}

# --------------------------------------------------------------------------- labels (FreeSurferColorLUT)

CEREBRAL_WM = (2, 41, 77, 251, 252, 253, 254, 255)
INFRATENTORIAL = (7, 46, 16)  # cerebellar white matter, brain stem
VENTRICLES = (4, 43, 5, 44)  # lateral and inferior lateral ventricles
CORTEX = (3, 42)
DEEP_GREY = (10, 11, 12, 13, 49, 50, 51, 52)  # thalamus, caudate, putamen, pallidum
MS_SITES = CEREBRAL_WM + INFRATENTORIAL
TUMOUR_SITES = CEREBRAL_WM + CORTEX + DEEP_GREY + (17, 18, 26, 28, 53, 54, 58, 60, 80, 85)
OEDEMA_SITES = CEREBRAL_WM
LACUNE_SITES = DEEP_GREY + CEREBRAL_WM


# --------------------------------------------------------------------------- the value table


@dataclass(frozen=True)
class Change:
    """A relative change (fraction; negative: a decrease) drawn as ``mean + sd * z`` away from 0, clipped to ``[low, high]``.

    ``z`` is a severity score in sd units: ``z > 0`` is a larger change (more
    damage) whatever the sign of the mean, so one score moves R1 and R2 down and
    PD up together.
    """

    mean: float
    sd: float
    low: float
    high: float

    def at(self, z):
        return np.clip(self.mean + math.copysign(self.sd, self.mean) * z, self.low, self.high)


# part         quantity   mean     sd     low     high   src
_MS_TABLE = """
lesion         R1        -0.352   0.139  -0.60   -0.10   H
lesion         R2        -0.211   0.114  -0.45   -0.05   H
lesion         PD        +0.234   0.103  +0.05   +0.45   H
black_hole     R1        -0.575   0.040  -0.65   -0.50   H,M
"""

# kind    part       quantity  low    high   src
_WATER_TABLE = """
tumour    necrosis   W         0.89   0.94   F,K,M
tumour    solid      W         0.83   0.88   F,M
tumour    oedema     dW        0.08   0.16   F,M
lacune    rim        dW        0.06   0.12   S,F,M
"""


def _parse_ms(table: str) -> Dict[Tuple[str, str], Change]:
    out = {}
    for line in table.strip().splitlines():
        part, quantity, mean, sd, low, high, _src = line.split()
        out[(part, quantity)] = Change(float(mean), float(sd), float(low), float(high))
    return out


def _parse_water(table: str) -> Dict[Tuple[str, str], Tuple[float, float]]:
    out = {}
    for line in table.strip().splitlines():
        kind, part, _quantity, low, high, _src = line.split()
        out[(kind, part)] = (float(low), float(high))
    return out


MS_CHANGES: Dict[Tuple[str, str], Change] = _parse_ms(_MS_TABLE)
"""(part, quantity) -> relative change of R1, R2 or PD of an MS lesion vs the tissue it replaces."""

WATER: Dict[Tuple[str, str], Tuple[float, float]] = _parse_water(_WATER_TABLE)
"""(kind, part) -> range of the water fraction W (or its increase dW) of a tumour or lacune part."""

# Model choices for the MS lesion severity and shapes.
_MS_Z_CLIP = 1.8          # per-lesion severity score, sd units
_MS_WITHIN_SD = 0.35      # smooth within-lesion variation of the score
_MS_CENTRE_BOOST = 0.5    # extra score at the centre of a lesion
_MS_SIZE_MM = (3.0, 15.0)  # long axis, power law p(d) ~ d^-2.2 (many small, few large)
_MS_SIZE_EXPONENT = 2.2
_MS_COUNT = (3, 25)
_MS_SITE_WEIGHTS = {  # share of lesions per site (model choice; sites of [T])
    "periventricular": 0.40, "deep": 0.25, "juxtacortical": 0.20, "infratentorial": 0.15,
}
_LACUNE_SITE_WEIGHTS = {"deep_grey": 0.6, "deep_wm": 0.4}  # share of lacunes per site (model choice)
_PD_MAX = 1.0


def _check_field(field: float) -> float:
    field = float(field)
    if not any(abs(field - f) < 1e-6 for f in FIELD_STRENGTHS):
        raise InputError(f"field strength {field:g} T: lesions are tabulated at {', '.join(f'{f:g}' for f in FIELD_STRENGTHS)} T")
    return min(FIELD_STRENGTHS, key=lambda f: abs(f - field))


def water_model(t1, t2, pd, w_new, field: float):
    """T1, T2 of tissue (``t1``, ``t2`` ms, water fraction ``pd``) whose water fraction becomes ``w_new``.

    ``R = R_free + (R - R_free) * g(w_new) / g(pd)`` with ``g(W) = (1 - W) / W`` and
    R_free the CSF rates of the tissue table at ``field`` [F]. Arrays broadcast;
    float32 results. ``w_new`` must lie in ``[pd, 1)``.
    """
    csf = relaxation("csf", _check_field(field))
    t1 = np.asarray(t1, np.float32)
    t2 = np.asarray(t2, np.float32)
    w_old = np.clip(np.asarray(pd, np.float32), 1e-3, 0.999)
    w_new = np.clip(np.asarray(w_new, np.float32), w_old, 0.999)
    ratio = ((1 - w_new) / w_new) / ((1 - w_old) / w_old)
    out = []
    for t, t_free in ((t1, csf.t1), (t2, csf.t2)):
        r_free = np.float32(1.0 / t_free)
        rate = 1.0 / np.maximum(t, 1e-3)
        new_rate = r_free + np.maximum(rate - r_free, 0) * ratio
        out.append(np.where(rate > r_free, 1.0 / new_rate, t).astype(np.float32))
    return out[0], out[1]


def lesion_ranges(kind: str, field: float = 3.0) -> Dict[str, Tuple[float, float]]:
    """Documented value ranges of a lesion kind at ``field`` (for checks and reports).

    Keys ``t1_ratio``, ``t2_ratio``, ``pd_ratio`` (lesion / the tissue it replaced,
    any voxel; partial-volume edges lie between 1 and the bound) for ``ms``; and
    ``t1``, ``t2`` (ms), ``pd`` absolute ranges of fully lesioned voxels in tissue
    of the table's WM row (``ms``: the lesion body, from the WM row's T1 and T2
    ranges and its PD +- 5 %; ``tumour``: solid tumour to necrosis; ``lacune``:
    the CSF-filled cavity).
    """
    kind = _kind(kind)
    field = _check_field(field)
    wm = relaxation("cerebral_wm", field)
    csf = relaxation("csf", field)
    if kind == "ms":
        r1 = (MS_CHANGES[("lesion", "R1")].high, MS_CHANGES[("black_hole", "R1")].low)
        r2 = (MS_CHANGES[("lesion", "R2")].high, MS_CHANGES[("lesion", "R2")].low)
        dp = (MS_CHANGES[("lesion", "PD")].low, MS_CHANGES[("lesion", "PD")].high)
        t1_ratio = (1 / (1 + r1[0]), 1 / (1 + r1[1]))
        t2_ratio = (1 / (1 + r2[0]), 1 / (1 + r2[1]))
        pd_ratio = (1 + dp[0], 1 + dp[1])
        body = MS_CHANGES[("lesion", "R1")]
        return {
            "t1_ratio": t1_ratio, "t2_ratio": t2_ratio, "pd_ratio": pd_ratio,
            "t1": (wm.t1_range[0] * t1_ratio[0], wm.t1_range[1] / (1 + body.low)),
            "t2": (wm.t2_range[0] * t2_ratio[0], wm.t2_range[1] * t2_ratio[1]),
            "pd": (0.95 * wm.pd * pd_ratio[0], min(_PD_MAX, 1.05 * wm.pd * pd_ratio[1])),
        }
    if kind == "tumour":
        lo = min(WATER[("tumour", "solid")])
        hi = max(WATER[("tumour", "necrosis")])
        t1s, t2s = water_model(np.array([wm.t1_range[0], wm.t1_range[1]]), np.array([wm.t2_range[0], wm.t2_range[1]]),
                               wm.pd, np.array([lo, hi]), field)
        return {"t1": (float(t1s[0]), float(t1s[1])), "t2": (float(t2s[0]), float(t2s[1])), "pd": (lo, hi)}
    return {"t1": (csf.t1_range[0], csf.t1_range[1]), "t2": (csf.t2_range[0], csf.t2_range[1]), "pd": (csf.pd, csf.pd)}


def _kind(kind: str) -> str:
    name = _ALIASES.get(str(kind).lower(), str(kind).lower())
    if name not in LESION_KINDS:
        raise InputError(f"unknown lesion kind {kind!r}; choose one of: {', '.join(LESION_KINDS)}")
    return name


# --------------------------------------------------------------------------- geometry helpers


class _Grid:
    """The label map, its spacing in array order, and a ~2 mm grid for choosing lesion sites."""

    def __init__(self, labels: np.ndarray, spacing: Sequence[float]):
        self.labels = labels
        self.shape = labels.shape
        self.itk_spacing = tuple(float(s) for s in spacing)
        self.step = np.asarray(self.itk_spacing[::-1], dtype=float)  # mm per array axis (k, j, i)
        self.stride = np.maximum(1, np.rint(2.0 / self.step)).astype(int)
        s = self.stride
        self.coarse = labels[::s[0], ::s[1], ::s[2]]
        self.coarse_step = self.step * self.stride
        self._distances: Dict[Tuple[int, ...], np.ndarray] = {}
        self._sets: Dict[Tuple[int, ...], np.ndarray] = {}

    def coarse_in(self, values: Sequence[int]) -> np.ndarray:
        key = tuple(values)
        if key not in self._sets:
            self._sets[key] = np.isin(self.coarse, key)
        return self._sets[key]

    def distance(self, values: Sequence[int]) -> np.ndarray:
        """Distance (mm) on the coarse grid to the nearest voxel with one of ``values`` (inf if none)."""
        key = tuple(values)
        if key not in self._distances:
            mask = self.coarse_in(values)
            self._distances[key] = distance_outside(mask, tuple(self.coarse_step[::-1]))
        return self._distances[key]

    def box(self, centre_mm: np.ndarray, half_mm: np.ndarray) -> Tuple[slice, slice, slice]:
        lo = np.floor((centre_mm - half_mm) / self.step).astype(int)
        hi = np.ceil((centre_mm + half_mm) / self.step).astype(int) + 1
        lo = np.clip(lo, 0, np.asarray(self.shape))
        hi = np.clip(hi, 0, np.asarray(self.shape))
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]

    def offsets(self, box, centre_mm) -> List[np.ndarray]:
        """Per array axis, the mm offset of each voxel of ``box`` from ``centre_mm``, shaped to broadcast."""
        out = []
        for axis, piece in enumerate(box):
            x = np.arange(piece.start, piece.stop, dtype=np.float32) * np.float32(self.step[axis]) - np.float32(centre_mm[axis])
            shape = [1, 1, 1]
            shape[axis] = x.size
            out.append(x.reshape(shape))
        return out

    def field(self, box, seed: int, wavelength_mm: float) -> np.ndarray:
        """A smooth random field (mean 0, sd 1) on ``box``, via :func:`.head.smooth_random_field`."""
        shape = tuple(p.stop - p.start for p in box)
        origin = tuple(float(box[2 - n].start * self.itk_spacing[n]) for n in range(3))
        grid = Volume(np.empty(shape, np.uint8), self.itk_spacing, origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return smooth_random_field(grid, seed, wavelength_mm, waves=16)

    def allowed(self, box, values: Sequence[int], sigma_mm: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
        """(mask of ``values`` in ``box``, that mask as a soft 0-1 fraction; 0 outside the mask)."""
        inside = np.isin(self.labels[box], values)
        soft = gaussian_smooth(inside, self.itk_spacing, sigma_mm) * inside
        return inside, soft.astype(np.float32)

    def pick(self, rng: np.random.Generator, candidates: np.ndarray, allowed: Sequence[int], tries: int = 20):
        """A random voxel centre (mm, array order) among coarse ``candidates`` whose full-resolution label is allowed."""
        where = np.flatnonzero(candidates)
        if where.size == 0:
            return None
        for _ in range(tries):
            index = np.array(np.unravel_index(where[rng.integers(where.size)], candidates.shape))
            full = np.minimum(index * self.stride + rng.integers(0, self.stride), np.asarray(self.shape) - 1)
            if self.labels[tuple(full)] in allowed:
                return (full + rng.uniform(-0.4, 0.4, 3)) * self.step, index
        return None

    def gradient(self, distance: np.ndarray, index: np.ndarray) -> Optional[np.ndarray]:
        """Unit vector (array order, mm) of the gradient of a coarse distance map at ``index``."""
        g = np.zeros(3)
        for axis in range(3):
            lo, hi = index.copy(), index.copy()
            lo[axis] = max(0, index[axis] - 1)
            hi[axis] = min(distance.shape[axis] - 1, index[axis] + 1)
            span = (hi[axis] - lo[axis]) * self.coarse_step[axis]
            a, b = distance[tuple(lo)], distance[tuple(hi)]
            if span > 0 and np.isfinite(a) and np.isfinite(b):
                g[axis] = (b - a) / span
        norm = np.linalg.norm(g)
        return g / norm if norm > 1e-6 else None


def _site_weights(names: Sequence[str], shares: Mapping[str, float]) -> np.ndarray:
    """The draw probability of each of ``names`` (sites present in this label map): its share, renormalized."""
    weights = np.array([shares.get(n, 1.0) for n in names])
    return weights / weights.sum()


def _pick_site(grid: _Grid, rng: np.random.Generator, names: Sequence[str], weights: np.ndarray,
               sites: Mapping[str, np.ndarray], allowed: Sequence[int]) -> Tuple[str, Optional[Tuple[np.ndarray, np.ndarray]]]:
    """One lesion's site, drawn by ``weights``, and a voxel in it whose label is ``allowed`` (:meth:`_Grid.pick`;
    None when none was found)."""
    site = names[int(rng.choice(len(names), p=weights))]
    return site, grid.pick(rng, sites[site], allowed)


def _random_frame(rng: np.random.Generator, first: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows: three orthonormal axes (array order), the first along ``first`` if given, else random."""
    u = rng.normal(size=3) if first is None else np.asarray(first, dtype=float)
    u = u / np.linalg.norm(u)
    v = rng.normal(size=3)
    v -= u * (v @ u)
    while np.linalg.norm(v) < 1e-6:
        v = rng.normal(size=3)
        v -= u * (v @ u)
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)])


def _ellipsoid_distance(offsets: List[np.ndarray], frame: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to an ellipsoid: (q - 1) / |grad q|."""
    q2 = 0.0
    grad = [0.0, 0.0, 0.0]
    for axis_vector, a in zip(frame, semi):
        p = offsets[0] * np.float32(axis_vector[0]) + offsets[1] * np.float32(axis_vector[1]) + offsets[2] * np.float32(axis_vector[2])
        q2 = q2 + (p / np.float32(a)) ** 2
        w = p / np.float32(a * a)
        for n in range(3):
            grad[n] = grad[n] + w * np.float32(axis_vector[n])
    q = np.sqrt(q2)
    gnorm = np.sqrt(grad[0] ** 2 + grad[1] ** 2 + grad[2] ** 2) / np.maximum(q, 1e-6)
    return ((q - 1) / np.maximum(gnorm, 1e-6)).astype(np.float32)


def _ramp(signed_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Soft inside fraction: 1 well inside, 0 well outside, 0.5 on the surface, linear over ``edge_mm``."""
    return np.clip(0.5 - signed_mm / np.float32(edge_mm), 0, 1).astype(np.float32)


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus its face neighbours (the one-voxel rim where a soft edge may lie)."""
    out = mask.copy()
    for axis in range(3):
        n = mask.shape[axis]
        if n < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def _power_law(rng: np.random.Generator, low: float, high: float, exponent: float) -> float:
    a = 1.0 - exponent
    u = rng.uniform()
    return float((low ** a - u * (low ** a - high ** a)) ** (1.0 / a))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2 ** 62))


def _union_box(a, b):
    if a is None:
        return b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


# --------------------------------------------------------------------------- MS


def _ms(grid: _Grid, rng: np.random.Generator, t1, t2, pd, mask, field: float) -> None:
    cerebral = grid.coarse_in(CEREBRAL_WM)
    infra = grid.coarse_in(INFRATENTORIAL)
    d_vent = grid.distance(VENTRICLES)
    d_ctx = grid.distance(CORTEX)
    sites = {
        "periventricular": cerebral & (d_vent <= 5.0),
        "deep": cerebral & (d_vent > 5.0) & (d_ctx > 3.0),
        "juxtacortical": cerebral & (d_ctx <= 3.0) & (d_vent > 8.0),
        "infratentorial": infra,
    }
    names = [n for n in _MS_SITE_WEIGHTS if sites[n].any()]
    if not names:
        if not (cerebral.any() or infra.any()):
            raise InputError("add_lesions('ms'): the label map has no white matter (labels 2, 41, 7, 46, 16, 77)")
        names, sites = ["deep"], {"deep": cerebral | infra}
    weights = _site_weights(names, _MS_SITE_WEIGHTS)

    count = int(round(math.exp(rng.uniform(math.log(_MS_COUNT[0]), math.log(_MS_COUNT[1] + 0.5)))))
    count = min(max(count, _MS_COUNT[0]), _MS_COUNT[1])
    r1c, r2c, pdc, bhc = (MS_CHANGES[k] for k in (("lesion", "R1"), ("lesion", "R2"), ("lesion", "PD"), ("black_hole", "R1")))

    shape = grid.shape
    e1 = np.zeros(shape, np.float32)  # fraction-weighted relative decrease of R1
    e2 = np.zeros(shape, np.float32)
    e3 = np.zeros(shape, np.float32)  # relative increase of PD
    union = None
    placed = 0
    attempts = 0
    while placed < count and attempts < count * 6:
        attempts += 1
        site, picked = _pick_site(grid, rng, names, weights, sites, MS_SITES)
        if picked is None:
            continue
        centre, cindex = picked
        length = _power_law(rng, *_MS_SIZE_MM, _MS_SIZE_EXPONENT)
        direction = grid.gradient(d_vent, cindex) if site == "periventricular" else None
        dawson = direction is not None and length >= 5.0 and rng.uniform() < 0.6
        if dawson:
            ratios = rng.uniform(0.3, 0.55, 2)
            frame = _random_frame(rng, direction)
        else:
            ratios = rng.uniform(0.55, 1.0, 2)
            frame = _random_frame(rng)
        semi = np.array([length / 2, length / 2 * ratios[0], length / 2 * ratios[1]])
        a_mean = float(np.prod(semi) ** (1 / 3))
        amp = rng.uniform(0.05, 0.15) if length < 5 else rng.uniform(0.1, 0.3)
        edge = rng.uniform(0.8, 1.8)
        z = float(np.clip(rng.normal(), -_MS_Z_CLIP, _MS_Z_CLIP))
        black_hole = length >= 6.0 and rng.uniform() < 0.3
        core = rng.uniform(0.35, 0.6)
        bh_r1 = bhc.at(rng.normal())
        seeds = (_seed(rng), _seed(rng))
        shape_wave = max(3.0, length * rng.uniform(0.5, 1.0))

        reach = semi[0] * (1 + 2.5 * amp) + 2.5 * amp * a_mean + edge + float(grid.step.max())
        box = grid.box(centre, np.full(3, reach))
        if any(p.stop - p.start < 1 for p in box):
            continue
        offsets = grid.offsets(box, centre)
        noise = np.clip(grid.field(box, seeds[0], shape_wave), -2.5, 2.5)
        signed = _ellipsoid_distance(offsets, frame, semi) - np.float32(amp * a_mean) * noise
        inside, soft = grid.allowed(box, MS_SITES)
        shape_f = _ramp(signed, edge)
        body = (shape_f >= 0.5) & inside
        if not body.any():
            continue
        f = shape_f * soft * _grow(body)  # the soft edge stays within a voxel of the lesion
        # severity: per-lesion score, smooth variation, more severe towards the centre
        depth = np.clip(-signed / np.float32(a_mean), 0, 1)
        score = z + _MS_WITHIN_SD * np.clip(grid.field(box, seeds[1], max(2.5, length / 2)), -2.5, 2.5) + _MS_CENTRE_BOOST * (depth - 0.5)
        d1 = -r1c.at(score)
        d2 = -r2c.at(score)
        d3 = pdc.at(score)
        if black_hole:
            fc = _ramp(signed + np.float32((1 - core) * a_mean), 0.8)
            d1 = d1 * (1 - fc) + np.float32(-bh_r1) * fc
            d1 = np.maximum(d1, -r1c.at(score))
        for total, change in ((e1, d1), (e2, d2), (e3, d3)):
            np.maximum(total[box], (f * change).astype(np.float32), out=total[box])
        mask[box][body] = MASK_VALUES["ms"]
        union = _union_box(union, box)
        placed += 1
    if union is None:
        raise InputError("add_lesions('ms'): no lesion could be placed in the white matter")
    # T1 = T1_tissue / (1 - dR1); partial-volume voxels (WM with some CSF) never go past CSF.
    csf = relaxation("csf", field)
    head = t1[union] > 0
    old1, old2, oldpd = t1[union], t2[union], pd[union]
    t1[union] = np.where(head, np.minimum(old1 / (1 - e1[union]), np.maximum(old1, np.float32(csf.t1))), old1)
    t2[union] = np.where(head, np.minimum(old2 / (1 - e2[union]), np.maximum(old2, np.float32(csf.t2))), old2)
    pd[union] = np.where(head, np.minimum(oldpd * (1 + e3[union]), np.maximum(oldpd, np.float32(_PD_MAX))), oldpd)


# --------------------------------------------------------------------------- tumour


def _tumour(grid: _Grid, rng: np.random.Generator, t1, t2, pd, mask, field: float) -> None:
    cerebral = grid.coarse_in(CEREBRAL_WM)
    if not cerebral.any():
        raise InputError("add_lesions('tumour'): the label map has no cerebral white matter (labels 2, 41)")
    d_ctx = grid.distance(CORTEX)
    d_vent = grid.distance(VENTRICLES)
    picked = None
    for candidates in (cerebral & (d_ctx >= 8) & (d_vent >= 6), cerebral & (d_ctx >= 4), cerebral):
        picked = grid.pick(rng, candidates, CEREBRAL_WM)
        if picked is not None:
            break
    if picked is None:
        raise InputError("add_lesions('tumour'): no site in the cerebral white matter")
    centre, _ = picked
    radius = rng.uniform(8.0, 22.0)
    semi = radius * np.array([1.0, *rng.uniform(0.75, 1.0, 2)])
    frame = _random_frame(rng)
    a_mean = float(np.prod(semi) ** (1 / 3))
    amp = rng.uniform(0.1, 0.25)
    rim = rng.uniform(2.5, 7.0)  # thickness of the solid shell, mm
    necrotic = rng.uniform() < 0.85 and a_mean - rim >= 3.0
    w_solid = rng.uniform(*WATER[("tumour", "solid")])
    w_nec = rng.uniform(*WATER[("tumour", "necrosis")])
    d_oedema = rng.uniform(*WATER[("tumour", "oedema")])
    reach_oedema = rng.uniform(4.0, 12.0)  # decay length, mm
    seeds = [_seed(rng) for _ in range(4)]

    extent = semi[0] * (1 + 2.5 * amp) + 1.0
    oedema_reach = 3.0 * reach_oedema * 1.5
    box = grid.box(centre, np.full(3, extent + oedema_reach))
    offsets = grid.offsets(box, centre)
    tbox = grid.box(centre, np.full(3, extent + 2.0))  # tumour part, inside box
    local = tuple(slice(t.start - b.start, t.stop - b.start) for t, b in zip(tbox, box))

    signed = np.full(tuple(p.stop - p.start for p in box), 1e3, np.float32)
    toff = [o[tuple(local[a] if n == a else slice(None) for n in range(3))] for a, o in enumerate(offsets)]
    signed[local] = _ellipsoid_distance(toff, frame, semi) - np.float32(amp * a_mean) * np.clip(grid.field(tbox, seeds[0], a_mean * 1.5), -2.5, 2.5)
    inside, soft = grid.allowed(box, TUMOUR_SITES)
    shape_t = _ramp(signed, 1.0)
    solid_mask = (shape_t >= 0.5) & inside
    if not solid_mask.any():
        raise InputError("add_lesions('tumour'): the tumour fell outside the parenchyma")
    f_t = shape_t * soft * _grow(solid_mask)
    f_n = np.zeros_like(f_t)
    if necrotic:
        inner = signed[local] + np.float32(rim) - np.float32(0.08 * a_mean) * np.clip(grid.field(tbox, seeds[1], a_mean * 0.8), -2.5, 2.5)
        f_n[local] = _ramp(inner, 1.0)
        f_n = np.minimum(f_n, f_t)

    # oedema: in white matter only, decaying with distance from the tumour
    wm_inside, wm_soft = grid.allowed(box, OEDEMA_SITES)
    distance = distance_outside(solid_mask, grid.itk_spacing)
    decay = np.float32(reach_oedema) * np.clip(1 + 0.5 * grid.field(box, seeds[2], 20.0), 0.3, 2.0)
    rise = np.float32(d_oedema) * np.exp(-distance / decay) * wm_soft
    rise[rise < 0.02] = 0  # oedema below a 2 % water rise is left out (and so is not in the mask)

    # Tumour tissue replaces what was there: its values come from the WM row of the
    # table with the tumour's water content (never below the tissue's own + 0.03, so
    # T1 and T2 only get longer); the oedema raises the water of the local tissue.
    # The two mix by the tumour fraction f_t (rates and PD, as partial volume).
    w_old = pd[box]
    head = (t1[box] > 0) & (w_old > 0) & (inside | wm_inside)
    hetero = np.float32(0.01) * np.clip(grid.field(box, seeds[3], 8.0), -2.5, 2.5)
    core = np.where(f_t > 0, f_n / np.maximum(f_t, 1e-6), 0)
    w_tumour = np.float32(w_solid) + hetero + core * np.float32(w_nec - w_solid)
    w_tumour = np.clip(np.maximum(w_tumour, w_old + 0.03), 0, 0.97)
    wm = relaxation("cerebral_wm", field)
    tt1, tt2 = water_model(np.float32(wm.t1), np.float32(wm.t2), np.float32(wm.pd), w_tumour, field)
    w_oedema = np.minimum(w_old + rise, 0.97)
    ot1, ot2 = water_model(t1[box], t2[box], w_old, w_oedema, field)
    r1 = (1 - f_t) / np.maximum(ot1, 1e-3) + f_t / tt1
    r2 = (1 - f_t) / np.maximum(ot2, 1e-3) + f_t / tt2
    w_new = (1 - f_t) * w_oedema + f_t * w_tumour
    changed = head & ((f_t > 0) | (rise > 0))
    t1[box] = np.where(changed, np.maximum(1 / r1, t1[box]), t1[box])
    t2[box] = np.where(changed, np.maximum(1 / r2, t2[box]), t2[box])
    pd[box] = np.where(changed, np.maximum(w_new, w_old), w_old)
    lesion = (solid_mask | (rise > 0)) & head
    mask[box][lesion] = MASK_VALUES["tumour"]


# --------------------------------------------------------------------------- lacunes


def _lacunes(grid: _Grid, rng: np.random.Generator, t1, t2, pd, mask, field: float) -> None:
    cerebral = grid.coarse_in(CEREBRAL_WM)
    deep_grey = grid.coarse_in(DEEP_GREY)
    d_ctx = grid.distance(CORTEX)
    d_vent = grid.distance(VENTRICLES)
    sites = {"deep_grey": deep_grey, "deep_wm": cerebral & (d_ctx >= 4) & (d_vent >= 3)}
    names = [n for n in ("deep_grey", "deep_wm") if sites[n].any()]
    if not names:
        if not cerebral.any():
            raise InputError("add_lesions('lacune'): the label map has no deep grey matter or cerebral white matter")
        names, sites = ["deep_wm"], {"deep_wm": cerebral}
    weights = _site_weights(names, _LACUNE_SITE_WEIGHTS)
    csf = relaxation("csf", field)
    count = int(rng.integers(1, 7))
    placed: List[Tuple[np.ndarray, float]] = []
    attempts = 0
    while len(placed) < count and attempts < count * 8:
        attempts += 1
        _, picked = _pick_site(grid, rng, names, weights, sites, LACUNE_SITES)
        if picked is None:
            continue
        centre, _ = picked
        length = _power_law(rng, 3.0, 15.0, 2.5)
        if any(np.linalg.norm(centre - c) < (length + d) / 2 + 3.0 for c, d in placed):
            continue
        semi = length / 2 * np.array([1.0, *rng.uniform(0.6, 1.0, 2)])
        frame = _random_frame(rng)
        a_mean = float(np.prod(semi) ** (1 / 3))
        amp = rng.uniform(0.03, 0.12)
        rim = rng.uniform(1.0, 2.0)
        gliosis = rng.uniform(*WATER[("lacune", "rim")])
        seed = _seed(rng)
        box = grid.box(centre, np.full(3, semi[0] * (1 + 2.5 * amp) + rim + 2.0))
        offsets = grid.offsets(box, centre)
        signed = _ellipsoid_distance(offsets, frame, semi) - np.float32(amp * a_mean) * np.clip(grid.field(box, seed, max(3.0, length)), -2.5, 2.5)
        inside, soft = grid.allowed(box, LACUNE_SITES)
        shape_c = _ramp(signed, 0.7)
        shape_r = _ramp(signed - np.float32(rim), 0.7)
        cavity = (shape_c >= 0.5) & inside
        if not cavity.any():
            continue
        whole = (shape_r >= 0.5) & inside
        f_c = shape_c * soft * _grow(cavity)
        f_r = np.clip(shape_r * soft * _grow(whole) - f_c, 0, 1)
        head = t1[box] > 0
        w_old = pd[box]
        w_rim = np.where(head, np.minimum(w_old + f_r * np.float32(gliosis), 0.97), w_old)
        rt1, rt2 = water_model(t1[box], t2[box], w_old, w_rim, field)
        rt1 = np.where(head, rt1, t1[box])
        rt2 = np.where(head, rt2, t2[box])
        # cavity: rates and PD mix towards CSF by the cavity fraction
        fc = np.where(head, f_c, 0).astype(np.float32)
        r1 = (1 - fc) / np.maximum(rt1, 1e-3) + fc / np.float32(csf.t1)
        r2 = (1 - fc) / np.maximum(rt2, 1e-3) + fc / np.float32(csf.t2)
        touched = head & ((fc > 0) | (f_r > 0))
        t1[box] = np.where(touched, 1 / r1, t1[box])
        t2[box] = np.where(touched, 1 / r2, t2[box])
        pd[box] = np.where(touched, (1 - fc) * w_rim + fc * np.float32(csf.pd), w_old)
        mask[box][whole & head] = MASK_VALUES["lacune"]
        placed.append((centre, length))
    if not placed:
        raise InputError("add_lesions('lacune'): no lacune could be placed")


# --------------------------------------------------------------------------- API


def add_lesions(
    labels: np.ndarray,
    t1: np.ndarray,
    t2: np.ndarray,
    pd: np.ndarray,
    spacing: Sequence[float],
    kind: str,
    rng: np.random.Generator,
    field: float = 3.0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """New T1, T2 (ms), PD maps with lesions of ``kind``, and their uint8 mask (see the module notes).

    ``labels``: FreeSurfer aseg labels (aparc+aseg is accepted: cortical parcels
    count as cortex), array ``[k, j, i]``; ``t1``, ``t2``, ``pd``: maps on the same
    grid (PD as a fraction); ``spacing``: ITK (i, j, k) spacing in mm; ``kind``:
    one of :data:`LESION_KINDS` (``"tumor"`` is accepted too); ``rng``: a
    ``numpy.random.Generator`` (an int seeds a new one); ``field``: 1.5 or 3 T.
    The mask holds :data:`MASK_VALUES` ``[kind]`` on lesion voxels (voxels at
    least half lesion) and 0 elsewhere. Inputs are not modified.
    """
    name = _kind(kind)
    field = _check_field(field)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"add_lesions needs a 3-D label map, got {labels.ndim}-D")
    for what, array in (("T1", t1), ("T2", t2), ("PD", pd)):
        if np.shape(array) != labels.shape:
            raise InputError(f"{what} map shape {np.shape(array)} does not match the labels {labels.shape}")
    if len(tuple(spacing)) != 3 or min(float(s) for s in spacing) <= 0:
        raise InputError(f"spacing must be three positive numbers (mm), got {spacing}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.max() >= 1000):
        labels = aparc_to_aseg(labels)
    out_t1 = np.array(t1, dtype=np.float32, copy=True)
    out_t2 = np.array(t2, dtype=np.float32, copy=True)
    out_pd = np.array(pd, dtype=np.float32, copy=True)
    mask = np.zeros(labels.shape, np.uint8)
    grid = _Grid(labels, spacing)
    if name == "ms":
        _ms(grid, rng, out_t1, out_t2, out_pd, mask, field)
    elif name == "tumour":
        _tumour(grid, rng, out_t1, out_t2, out_pd, mask, field)
    else:
        _lacunes(grid, rng, out_t1, out_t2, out_pd, mask, field)
    return out_t1, out_t2, out_pd, mask


def lesion_summary(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Dict[str, Dict[str, object]]:
    """Per kind present in ``mask``: number of connected lesions (26-connectivity), their volumes and the total (mm3).

    For manifests: ``{"ms": {"count": 12, "volumes_mm3": [...], "total_mm3": 3456.0}, ...}``.
    """
    import SimpleITK as sitk

    mask = np.asarray(mask)
    voxel = float(np.prod([float(s) for s in spacing]))
    out: Dict[str, Dict[str, object]] = {}
    for kind, value in MASK_VALUES.items():
        binary = mask == value
        if not binary.any():
            continue
        image = sitk.GetImageFromArray(binary.astype(np.uint8))
        components = sitk.GetArrayFromImage(sitk.ConnectedComponent(image, True))
        sizes = np.bincount(components.ravel())[1:]
        volumes = sorted((float(s) * voxel for s in sizes if s > 0), reverse=True)
        out[kind] = {"count": len(volumes), "volumes_mm3": volumes, "total_mm3": float(sum(volumes))}
    return out
