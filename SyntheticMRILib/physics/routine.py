"""The routine clinical series a map estimator reads: T1w (spin echo), T2w (spin echo), T2-FLAIR (inversion
recovery), their clinical parameter ranges, and the parameter vector a network is told. Torch-free.

Ranges (ms) are those of routine brain protocols at 1.5 T and 3 T (T1w SE TR 400-800 / TE 8-20; T2w TSE
TR 2500-6000 / TE 80-120; FLAIR TR 6000-11000 / TE 80-140 / TI 1800-2800): the training data draws every
protocol inside them, and :func:`outside_ranges` draws the out-of-range protocols of the evaluation (each
value up to 20 % beyond an end). A T1w's TI and a T2w's TI do not exist, so the vector has 7 entries, not 9.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import InputError
from .protocols import Protocol

__all__ = ["SERIES", "SEQUENCE_OF", "RANGES_MS", "PARAMETER_NAMES", "series_protocols", "parameter_vector",
           "draw_value", "draw_protocols", "outside_ranges", "describe_ranges"]

SERIES = ("t1w", "t2w", "flair")
SEQUENCE_OF = {"t1w": "se", "t2w": "se", "flair": "ir"}
RANGES_MS: Dict[str, Dict[str, Tuple[float, float]]] = {
    "t1w": {"tr": (400.0, 800.0), "te": (8.0, 20.0)},
    "t2w": {"tr": (2500.0, 6000.0), "te": (80.0, 120.0)},
    "flair": {"tr": (6000.0, 11000.0), "te": (80.0, 140.0), "ti": (1800.0, 2800.0)},
}
PARAMETER_NAMES: Tuple[Tuple[str, str], ...] = tuple((s, p) for s in SERIES for p in RANGES_MS[s])
_OUTSIDE = 0.2  # how far beyond the training ranges the out-of-range evaluation goes (a share of each end)


def series_protocols(values: Mapping[str, Mapping[str, float]]) -> Dict[str, Protocol]:
    """The three series' protocols from ``{"t1w": {"tr":, "te":}, ...}`` (ms), each checked by
    :meth:`Protocol.validate` (TE < TR, TI < TR, times typed in seconds); the message names the series."""
    protocols = {}
    for name in SERIES:
        given = dict(values.get(name, {}))
        missing = [p for p in RANGES_MS[name] if given.get(p) is None]
        if missing:
            raise InputError(f"{name}: missing {', '.join(p.upper() for p in missing)} (ms); give --{name}-"
                             f"{missing[0]} or a JSON sidecar with it")
        extra = [p for p in given if p not in RANGES_MS[name] and given[p] is not None]
        if extra:
            raise InputError(f"{name}: a {SEQUENCE_OF[name].upper()} series takes no {', '.join(p.upper() for p in extra)}")
        try:
            protocols[name] = Protocol(SEQUENCE_OF[name], **{p: float(v) for p, v in given.items()}).validate()
        except InputError as error:  # the advice names this command's flags: --t1w-tr, not --tr
            raise InputError(f"{name}: " + re.sub(r"--(tr|te|ti)\b", rf"--{name}-\1", str(error))) from None
    return protocols


def parameter_vector(protocols: Mapping[str, Protocol]) -> List[float]:
    """The 7 values a network is told: log of each time, centred on its training range and scaled by its width
    (the ranges map to [-0.5, 0.5]); values outside them extrapolate on the same scale."""
    out = []
    for series, name in PARAMETER_NAMES:
        low, high = RANGES_MS[series][name]
        value = float(getattr(protocols[series], name))
        out.append((math.log(value) - 0.5 * math.log(low * high)) / math.log(high / low))
    return out


def draw_value(rng, low: float, high: float, outside: bool = False) -> float:
    """Log-uniform in [``low``, ``high``], or (``outside``) uniform up to 20 % beyond one end, either end even odds."""
    if not outside:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if rng.random() < 0.5:
        return float(rng.uniform(low * (1 - _OUTSIDE), low))
    return float(rng.uniform(high, high * (1 + _OUTSIDE)))


def draw_protocols(rng, outside: bool = False) -> Dict[str, Protocol]:
    """One protocol per series (``rng``: a ``numpy.random.Generator``), log-uniform in the training ranges, or with
    every value up to 20 % beyond one end (``outside``); redrawn until physically possible."""
    while True:
        values = {s: {p: draw_value(rng, *RANGES_MS[s][p], outside) for p in RANGES_MS[s]} for s in SERIES}
        try:
            return series_protocols(values)
        except InputError:
            continue


def outside_ranges(protocols: Mapping[str, Protocol]) -> List[str]:
    """The parameters outside the training ranges, as ``"flair TI 3100 ms (1800-2800)"`` (empty when none)."""
    out = []
    for series, name in PARAMETER_NAMES:
        low, high = RANGES_MS[series][name]
        value = float(getattr(protocols[series], name))
        if not low <= value <= high:
            out.append(f"{series} {name.upper()} {value:g} ms ({low:g}-{high:g})")
    return out


def describe_ranges(series: Optional[Sequence[str]] = None) -> str:
    """``t1w TR 400-800 TE 8-20; ...`` for help texts and model cards."""
    return "; ".join(f"{s} " + " ".join(f"{p.upper()} {lo:g}-{hi:g}" for p, (lo, hi) in RANGES_MS[s].items())
                     for s in (series or SERIES))
