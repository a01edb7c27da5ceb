"""The learnable contrast module (LCM): K synthetic contrasts whose TR/TE/TI/flip are trainable.

Each contrast is a sequence of :mod:`SyntheticMRILib.physics.protocols` run by the physics layer
(:func:`SyntheticMRILib.physics.synthesis.synthesize`). Its parameters live in an unconstrained
space and are mapped into physical bounds on every forward pass, so no optimizer step,
however large, can leave them (TE < TR, TI < TR, TI2 < TI, all > 0, flip in range).
Times are mapped on a log scale (``lo * (hi/lo)**sigmoid(u)``) because TR spans two
orders of magnitude and a relative step is what matters physically.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import InputError
from ..physics.protocols import LEARNABLE_RANGES as BOUNDS, LEARNABLE_TE_FRACTION_OF_TR as _TE_MAX_FRACTION_OF_TR
from ..physics.protocols import SEQUENCES, Protocol, preset
from ..physics.synthesis import synthesize

__all__ = ["LearnableContrast"]

_EPS = 1e-4

DEFAULT_PRESETS = ("T1w", "T2w", "T2-FLAIR")


def _unit(u: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(u)


def _log_between(u: torch.Tensor, lo, hi) -> torch.Tensor:
    lo = torch.as_tensor(lo, dtype=u.dtype)
    hi = torch.as_tensor(hi, dtype=u.dtype)
    return torch.exp(torch.log(lo) + (torch.log(hi) - torch.log(lo)) * _unit(u))


def _inverse_log_between(value: float, lo: float, hi: float) -> float:
    fraction = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    fraction = min(max(fraction, _EPS), 1 - _EPS)
    return math.log(fraction / (1 - fraction))


class LearnableContrast(nn.Module):
    """K contrasts from T1/T2/PD maps with trainable (or frozen) sequence parameters.

    ``sequences``: one sequence name per contrast (``se``, ``ir``, ``psir``, ``dir``,
    ``gre``); ``start``: a protocol per contrast to start from (default: the middle of
    the bounds); ``learnable=False`` freezes the parameters (fixed clinical contrasts).
    ``forward(t1, t2, pd)`` takes maps ``[B, H, W]`` (any shape) in ms / fraction and
    returns the raw signals ``[B, K, H, W]``. :meth:`protocols` gives the current
    parameters as validated float protocols, in ms.
    """

    def __init__(self, sequences: Sequence[str], start: Optional[Sequence[Protocol]] = None, learnable: bool = True) -> None:
        super().__init__()
        unknown = [s for s in sequences if s not in BOUNDS]
        if unknown or not sequences:
            raise InputError(f"learnable sequences must be some of {', '.join(BOUNDS)}; got {list(sequences)}")
        if start is not None and [p.sequence for p in start] != list(sequences):
            raise InputError("each start protocol must have the sequence of its contrast")
        self.sequences = tuple(sequences)
        self.raw = nn.ParameterList()
        for k, sequence in enumerate(self.sequences):
            names = self.parameter_names(sequence)
            values = torch.zeros(len(names)) if start is None else torch.tensor(self._unconstrained(start[k]))
            self.raw.append(nn.Parameter(values, requires_grad=learnable))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_presets(cls, names: Sequence[str] = DEFAULT_PRESETS, learnable: bool = True) -> "LearnableContrast":
        protocols = [preset(name).protocol for name in names]
        return cls([p.sequence for p in protocols], protocols, learnable)

    @classmethod
    def random(cls, sequences: Sequence[str], seed: int = 0, spread: float = 2.0) -> "LearnableContrast":
        """A random start: every unconstrained parameter drawn from N(0, spread) (seeded)."""
        module = cls(sequences)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for raw in module.raw:
                raw.copy_(torch.randn(raw.shape, generator=generator) * spread)
        return module

    @staticmethod
    def parameter_names(sequence: str) -> Tuple[str, ...]:
        return ("tr", "te") + tuple(n for n in ("ti", "ti2", "flip") if n in SEQUENCES[sequence].needs)

    # ------------------------------------------------------------------ the mapping
    def _physical(self, k: int) -> Dict[str, torch.Tensor]:
        sequence, raw = self.sequences[k], self.raw[k]
        bounds = BOUNDS[sequence]
        u = dict(zip(self.parameter_names(sequence), raw.unbind()))
        tr = _log_between(u["tr"], *bounds["tr"])
        values = {"tr": tr}
        te_lo, te_hi = bounds["te"]
        values["te"] = _log_between(u["te"], te_lo, torch.clamp(tr * _TE_MAX_FRACTION_OF_TR, max=te_hi))
        if "ti" in u:
            values["ti"] = _log_between(u["ti"], bounds["ti"][0], tr * bounds["ti"][1])
        if "ti2" in u:
            values["ti2"] = _log_between(u["ti2"], bounds["ti2"][0], values["ti"] * bounds["ti2"][1])
        if "flip" in u:
            values["flip"] = bounds["flip"][0] + (bounds["flip"][1] - bounds["flip"][0]) * _unit(u["flip"])
        return values

    def _unconstrained(self, protocol: Protocol) -> List[float]:
        protocol.validate()
        bounds = BOUNDS[protocol.sequence]
        out = [_inverse_log_between(protocol.tr, *bounds["tr"])]
        tr = math.exp(math.log(bounds["tr"][0]) + (math.log(bounds["tr"][1]) - math.log(bounds["tr"][0])) / (1 + math.exp(-out[0])))
        out.append(_inverse_log_between(protocol.te, bounds["te"][0], min(bounds["te"][1], tr * _TE_MAX_FRACTION_OF_TR)))
        if protocol.ti is not None:
            out.append(_inverse_log_between(protocol.ti, bounds["ti"][0], tr * bounds["ti"][1]))
        if protocol.ti2 is not None:
            out.append(_inverse_log_between(protocol.ti2, bounds["ti2"][0], protocol.ti * bounds["ti2"][1]))
        if protocol.flip is not None:
            lo, hi = bounds["flip"]
            fraction = min(max((protocol.flip - lo) / (hi - lo), _EPS), 1 - _EPS)
            out.append(math.log(fraction / (1 - fraction)))
        return out

    def tensor_protocols(self) -> List[Protocol]:
        """The current protocols with tensor parameters (differentiable)."""
        return [Protocol(sequence, **self._physical(k)) for k, sequence in enumerate(self.sequences)]

    def protocols(self) -> List[Protocol]:
        """The current protocols as plain floats in ms / degrees, validated."""
        out = []
        with torch.no_grad():
            for k, sequence in enumerate(self.sequences):
                values = {name: float(v) for name, v in self._physical(k).items()}
                out.append(Protocol(sequence, **values).validate())
        return out

    def forward(self, t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor) -> torch.Tensor:
        return torch.stack([synthesize(t1, t2, pd, p) for p in self.tensor_protocols()], dim=1)
