"""Training and test data for the map estimator: routine series acquired, through the physics layer, from phantom
maps whose tissue values are randomized.

* :class:`RandomTissueValues` (the randomized tissue model): per draw, every tissue's T1, T2 and PD are
  multiplied by their own log-normal factors around a factor shared by all tissues (a field strength or
  mapping method shifts all of them together), and by smooth spatial fields (B1/B0 errors of a mapping
  method). Spreads: T1 and T2 differ by 10-30 % between mapping methods of one brain (SyMRI/MAGiC, MRF, IR
  and VFA fits) and T1 of brain by ~20-30 % between 1.5 T and 3 T (tissue table, Rooney et al. MRM 2007);
  sd 0.12 per tissue and 0.10 shared, clipped at 2.5 sd, spans both, a field change
  only in its tail (the model card's `external` T1 shows what that costs). PD varies less (sd 0.04 / 0.03).
* :func:`acquire`: the three series of a protocol draw as a scanner gives them: a lower acquired resolution,
  a smooth coil bias, Rician noise at SNR 20-100 (mean head signal over noise sigma) and an arbitrary
  receiver gain per series.
* :class:`RoutineBank`: the axial slices of a phantom folder in memory, sampled as crops; each draw's
  network input is normalized by the series' medians over the whole subject (:func:`series_scales` on a
  regular subsample of the volume acquired the same way), as inference normalizes a whole volume.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .augment import scanner_effects
from ..errors import InputError
from ..io.volumes import PathLike, read_volume
from ..models.mapper import network_input, series_scales
from ..phantoms.head import TISSUE_NAMES, tissue_index
from ..phantoms.manifest import read_manifest
from ..physics.protocols import Protocol
from ..physics.routine import SERIES, draw_protocols, parameter_vector
from ..physics.synthesis import synthesize

__all__ = ["RandomTissueValues", "Acquisition", "ScanAcquisition", "acquire_one", "acquire", "RoutineBank", "TISSUE_NAMES"]

# Weights of the polynomial terms of a smooth field (constant, 3 linear, 6 quadratic): unit variance on average
# over the head, the constant term excluded (the shared factor of RandomTissueValues already moves the mean).
_FIELD_WEIGHTS = np.array([0.0] + [0.9] * 3 + [0.6] * 6, np.float32)


@dataclass(frozen=True)
class RandomTissueValues:
    """Per-tissue and shared multiplicative changes of T1, T2 and PD, and smooth fields (see the module text).

    Args:
        tissue_sd: log-sd of each tissue's own factor (T1, T2, PD).
        shared_sd: log-sd of the factor all tissues share (T1, T2, PD).
        field_sd: sd of the smooth multiplicative field (T1, T2, PD).
        clip: factors are clipped at this many sd.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> factors = RandomTissueValues().draw(rng)
        >>> factors.shape  # one (T1, T2, PD) triple per tissue of TISSUE_NAMES, and 0 for background
        (21, 3)
    """

    tissue_sd: Tuple[float, float, float] = (0.12, 0.12, 0.04)
    shared_sd: Tuple[float, float, float] = (0.10, 0.10, 0.03)
    field_sd: Tuple[float, float, float] = (0.04, 0.04, 0.03)
    clip: float = 2.5

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """``[1 + tissues, 3]`` factors indexed by tissue index (row 0, background, is 1)."""
        z = np.clip(rng.standard_normal((len(TISSUE_NAMES), 3)), -self.clip, self.clip)
        shared = np.clip(rng.standard_normal(3), -self.clip, self.clip)
        factors = np.exp(z * np.array(self.tissue_sd) + shared * np.array(self.shared_sd))
        return np.vstack([np.ones((1, 3)), factors]).astype(np.float32)

    def apply(self, maps: torch.Tensor, tissues: torch.Tensor, factors: np.ndarray,
              fields: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``maps`` ``[3, ...]`` (T1, T2, PD) changed by ``factors`` of :meth:`draw` at tissue indices ``tissues``
        (``[...]``) and optional unit ``fields`` ``[3, ...]``; T2 stays below 0.95 T1, PD at most 1."""
        f = torch.from_numpy(factors)[tissues.long()].movedim(-1, 0)
        if fields is not None:
            f = f * (1 + torch.tensor(self.field_sd).view(3, *([1] * (maps.dim() - 1))) * fields)
        out = maps * f
        t1, t2, pd = out
        return torch.stack([t1, torch.minimum(t2, 0.95 * t1), pd.clamp(max=1.0)])


SNR, BIAS, RESOLUTION_LOSS = (20.0, 100.0), 0.15, (1.0, 1.8)  # what a scanner draw spans (uniform; bias: sd of log)
GAIN = (0.1, 1000.0)  # receiver gain, log-uniform


def _draw_gain(rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(GAIN[0]), np.log(GAIN[1]))))


@dataclass(frozen=True)
class Acquisition:
    """One draw of what a scanner does to the three series: SNR, coil bias, lost resolution, receiver gains."""

    snr: Tuple[float, float, float]
    bias: float
    resolution_loss: float
    gains: Tuple[float, float, float]
    seed: int

    @classmethod
    def draw(cls, rng: np.random.Generator, snr: Tuple[float, float] = SNR, bias: float = BIAS,
             resolution_loss: Tuple[float, float] = RESOLUTION_LOSS) -> "Acquisition":
        return cls(tuple(float(rng.uniform(*snr)) for _ in SERIES), bias, float(rng.uniform(*resolution_loss)),
                   tuple(_draw_gain(rng) for _ in SERIES), int(rng.integers(2 ** 31)))


def acquire_one(maps: torch.Tensor, protocol: Protocol, snr: Optional[float], bias: float, resolution_loss: float,
                gain: float, generator: torch.Generator, spatial_dims: int = 2) -> torch.Tensor:
    """One series of ``protocol`` from maps ``[3, ...]`` as a scanner gives it (``snr=None``: no noise; the bias
    field is drawn first, so two calls from equally seeded generators share it)."""
    image = synthesize(maps[0], maps[1], maps[2], protocol)
    return scanner_effects(image, generator, snr=snr, bias=bias, resolution_loss=resolution_loss,
                           spatial_dims=spatial_dims) * gain


class ScanAcquisition:
    """What a scanner does to one scan (re-parameterization; :class:`Acquisition` draws it for three series): SNR,
    coil bias, lost resolution, receiver gain, and a noise seed."""

    def __init__(self, rng: np.random.Generator, snr: Tuple[float, float] = SNR, bias: float = BIAS,
                 resolution_loss: Tuple[float, float] = RESOLUTION_LOSS) -> None:
        self.snr = float(rng.uniform(*snr))
        self.bias = bias
        self.resolution_loss = float(rng.uniform(*resolution_loss))
        self.gain = _draw_gain(rng)
        self.seed = int(rng.integers(2 ** 31))

    def image(self, maps: torch.Tensor, protocol: Protocol, noise: bool = True, spatial_dims: int = 2,
              seed: Optional[int] = None) -> torch.Tensor:
        """The scan of ``protocol``; ``noise=False``: the same bias (same seed), resolution and gain, no noise."""
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return acquire_one(maps, protocol, self.snr if noise else None, self.bias, self.resolution_loss, self.gain,
                           generator, spatial_dims)


def acquire(maps: torch.Tensor, protocols: Mapping[str, Protocol], acquisition: Acquisition,
            spatial_dims: int = 2) -> torch.Tensor:
    """The series ``[3, ...]`` of ``protocols`` from maps ``[3, ...]`` (T1, T2 ms, PD), with ``acquisition``'s
    scanner effects."""
    generator = torch.Generator().manual_seed(acquisition.seed)
    return torch.stack([acquire_one(maps, protocols[name], acquisition.snr[n], acquisition.bias,
                                    acquisition.resolution_loss, acquisition.gains[n], generator, spatial_dims)
                        for n, name in enumerate(SERIES)])


class RoutineBank:
    """The axial slices of a phantom folder (``syntheticmri phantom``) in memory, and random training crops.

    Args:
        folder: a phantom folder with ``manifest.json``.
        limit: use only the first ``limit`` subjects.
        tissues: the tissue-value randomization (``None``: the phantoms' own values).
    """

    def __init__(self, folder: PathLike, limit: Optional[int] = None,
                 tissues: Optional[RandomTissueValues] = RandomTissueValues()) -> None:
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("lesions", "none") != "none" and any(s.get("lesion") for s in manifest["subjects"]):
            raise InputError(f"{folder}: training subjects must be healthy (lesions appear only in test sets)")
        self.tissues = tissues
        self.subjects: List[Dict[str, torch.Tensor]] = []
        for record in manifest["subjects"][:limit]:
            files = {name: folder / path for name, path in record["files"].items()}
            labels = read_volume(files["labels"])
            if not np.allclose(labels.spacing, 1.0, atol=1e-3):
                raise InputError(f"{files['labels']}: training needs 1 mm phantoms")
            keep = np.flatnonzero(labels.array.reshape(labels.array.shape[0], -1).any(1))
            index, names = tissue_index(labels.array[keep])
            lookup = np.array([0] + [TISSUE_NAMES.index(n) + 1 for n in names], np.uint8)
            maps = np.stack([read_volume(files[m]).array[keep].astype(np.float32) for m in ("t1", "t2", "pd")])
            self.subjects.append({"maps": torch.from_numpy(maps), "tissues": torch.from_numpy(lookup[index]),
                                  "grid": labels})
        if not self.subjects:
            raise InputError(f"{folder}: no subjects")

    def _field(self, n: int, coefficients: torch.Tensor, box) -> torch.Tensor:
        """Smooth unit fields ``[3, ...]`` at ``box`` of subject ``n``: quadratic polynomials in the normalized
        coordinates (one gentle undulation across the head, as a mapping sequence's B1 error makes)."""
        depth, h, w = self.subjects[n]["maps"].shape[1:]
        axes = [torch.linspace(-1, 1, size)[index] for size, index in zip((depth, h, w), box[1:])]
        z, y, x = torch.meshgrid(*axes, indexing="ij")
        terms = torch.stack([torch.ones_like(x), x, y, z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, y * z, z * x])
        return torch.einsum("ft,t...->f...", coefficients, terms)

    @staticmethod
    def draw_fields(rng: np.random.Generator) -> torch.Tensor:
        """Coefficients ``[3, 10]`` of the smooth fields on T1, T2 and PD (see :meth:`_field`)."""
        return torch.from_numpy(rng.standard_normal((3, 10)).astype(np.float32) * _FIELD_WEIGHTS)

    def draw(self, n: int, rng: np.random.Generator, outside: bool = False) -> Dict[str, object]:
        """One subject-level draw: protocols, acquisition, tissue factors, fields, and the normalizing scales."""
        protocols = draw_protocols(rng, outside)
        acquisition = Acquisition.draw(rng)
        factors = self.tissues.draw(rng) if self.tissues is not None else None
        fields = self.draw_fields(rng)
        subject = self.subjects[n]
        sub = (slice(None), slice(None, None, 3), slice(None, None, 3), slice(None, None, 3))
        maps = self._maps(n, sub, factors, fields)
        series = acquire(maps, protocols, acquisition, spatial_dims=3)
        return {"protocols": protocols, "acquisition": acquisition, "factors": factors, "fields": fields,
                "scales": series_scales(series.numpy()), "subject": n, "depth": subject["maps"].shape[1]}

    def _maps(self, n: int, box, factors, fields) -> torch.Tensor:
        subject = self.subjects[n]
        maps = subject["maps"][box]
        if factors is None:
            return maps
        return self.tissues.apply(maps, subject["tissues"][box[1:]], factors, self._field(n, fields, box))

    def sample(self, count: int, crop: int, context: int, rng: np.random.Generator, draws: int = 2,
               outside: bool = False) -> Dict[str, torch.Tensor]:
        """``count`` crops from ``draws`` subject draws: ``inputs`` ``[B, 3 * context, crop, crop]`` (normalized),
        ``parameters`` ``[B, 7]``, ``targets`` ``[B, 3, crop, crop]`` (T1, T2, PD), ``scaled`` (the noise-free
        series over the same scales, for the physics term) and ``protocols`` (per crop)."""
        inputs, parameters, targets, protocols = [], [], [], []
        per_draw = [count // draws + (k < count % draws) for k in range(draws)]
        for size in per_draw:
            n = int(rng.integers(len(self.subjects)))
            d = self.draw(n, rng, outside)
            depth, h, w = self.subjects[n]["maps"].shape[1:]
            if h < crop or w < crop:
                raise InputError(f"slices of {h}x{w} are smaller than the crop {crop}")
            half = context // 2
            for _ in range(size):
                s = int(rng.integers(depth))
                y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
                ks = [min(max(k, 0), depth - 1) for k in range(s - half, s + half + 1)]
                box = (slice(None), ks, slice(y0, y0 + crop), slice(x0, x0 + crop))
                maps = self._maps(n, box, d["factors"], d["fields"])
                acq = d["acquisition"]
                acq = Acquisition(acq.snr, acq.bias, acq.resolution_loss, acq.gains, int(rng.integers(2 ** 31)))
                series = acquire(maps, d["protocols"], acq) / torch.from_numpy(d["scales"]).view(3, 1, 1, 1)
                inputs.append(network_input(series, context)[half])
                targets.append(maps[:, half])
                parameters.append(parameter_vector(d["protocols"]))
                protocols.append(d["protocols"])
        return {"inputs": torch.stack(inputs), "parameters": torch.tensor(parameters, dtype=torch.float32),
                "targets": torch.stack(targets), "protocols": protocols}
