"""One weighted scan's protocol, as re-parameterization reads and writes it: the sequences it takes (spin echo,
magnitude inversion recovery), their clinical ranges, the default input protocol of the published
default-to-param mode, and the parameter vector a network is told. Torch-free.

Ranges (ms): spin echo TR 400-8000 / TE 8-150 (T1w to heavily T2w, PD-w between); inversion recovery TR
2000-11000 / TE 8-150 / TI 100-3000 with TR >= 2.5 TI (STIR TI 100-250, T1-FLAIR TI 700-1100, FLAIR TI
1800-2800, and all between). Training draws every input and target in them; :func:`draw_scan` with
``outside`` draws the out-of-range targets of the evaluation (each value up to 20 % beyond an end).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from ..errors import InputError
from .protocols import Protocol
from .routine import draw_value

__all__ = ["SCAN_SEQUENCES", "SCAN_RANGES_MS", "DEFAULT_INPUT", "SCAN_VECTOR_LENGTH", "check_scan", "scan_vector",
           "draw_scan", "outside_scan_ranges", "describe_scan_ranges"]

SCAN_SEQUENCES = ("se", "ir")
SCAN_RANGES_MS: Dict[str, Dict[str, Tuple[float, float]]] = {
    "se": {"tr": (400.0, 8000.0), "te": (8.0, 150.0)},
    "ir": {"tr": (2000.0, 11000.0), "te": (8.0, 150.0), "ti": (100.0, 3000.0)},
}
_TR_PER_TI = 2.5  # an IR's TR is at least this many TIs (clinical IR protocols leave time for recovery)
DEFAULT_INPUT = Protocol("se", 4500.0, 50.0)  # the published method's fixed input protocol (default-to-param)
_SPAN = {name: (min(r[name][0] for r in SCAN_RANGES_MS.values() if name in r),
                max(r[name][1] for r in SCAN_RANGES_MS.values() if name in r)) for name in ("tr", "te", "ti")}
SCAN_VECTOR_LENGTH = 4  # IR flag, log TR, log TE, log TI


def check_scan(protocol: Protocol, what: str = "the scan") -> Protocol:
    """``protocol`` validated (:meth:`Protocol.validate`) and of a sequence a weighted scan here may have."""
    if protocol.sequence not in SCAN_SEQUENCES:
        raise InputError(f"{what}: sequence {protocol.sequence!r} is not one re-parameterization reads or the "
                         f"direct engine writes; choose {' or '.join(SCAN_SEQUENCES)}")
    return protocol.validate()


def _scaled(name: str, value: float) -> float:
    low, high = _SPAN[name]
    return (math.log(value) - 0.5 * math.log(low * high)) / math.log(high / low)


def scan_vector(protocol: Protocol) -> List[float]:
    """The 4 values a network is told: 1 for IR (0 for SE), then log TR, log TE and log TI, each centred on the
    span of both sequences' ranges and scaled by its width (to [-0.5, 0.5]); a spin echo's TI is 0."""
    ir = protocol.sequence == "ir"
    return [float(ir), _scaled("tr", float(protocol.tr)), _scaled("te", float(protocol.te)),
            _scaled("ti", float(protocol.ti)) if ir else 0.0]


def draw_scan(rng, sequence: Optional[str] = None, outside: bool = False) -> Protocol:
    """A protocol log-uniform in the ranges of ``sequence`` (``None``: SE or IR, even odds), or with one value up to
    20 % beyond an end (``outside``; the others inside); ``rng``: a ``numpy.random.Generator``."""
    sequence = sequence or SCAN_SEQUENCES[int(rng.integers(2))]
    ranges = SCAN_RANGES_MS[sequence]
    while True:
        beyond = list(ranges)[int(rng.integers(len(ranges)))] if outside else None
        values = {name: draw_value(rng, *ranges[name], name == beyond) for name in ranges}
        if sequence == "ir" and beyond != "tr":
            shortest = max(ranges["tr"][0], _TR_PER_TI * values["ti"])
            if shortest < ranges["tr"][1]:
                values["tr"] = draw_value(rng, shortest, ranges["tr"][1])
        try:
            return Protocol(sequence, **values).validate()
        except InputError:
            continue


def outside_scan_ranges(protocol: Protocol) -> List[str]:
    """The parameters outside the ranges of the protocol's sequence, as ``"TE 180 ms (8-150)"``; an IR's TR in its
    range but under 2.5 TI (training never saw so little recovery) as ``"TR 3000 ms (>= 2.5 TI = 5000)"``."""
    out = []
    for name, (low, high) in SCAN_RANGES_MS.get(protocol.sequence, {}).items():
        value = float(getattr(protocol, name))
        if not low <= value <= high:
            out.append(f"{name.upper()} {value:g} ms ({low:g}-{high:g})")
    if protocol.sequence == "ir" and not any(line.startswith("TR ") for line in out):
        shortest = _TR_PER_TI * float(protocol.ti)
        if float(protocol.tr) < shortest:
            out.append(f"TR {float(protocol.tr):g} ms (>= {_TR_PER_TI:g} TI = {shortest:g})")
    return out


def describe_scan_ranges() -> str:
    """``SE TR 400-8000 TE 8-150; IR ...`` for help texts and model cards."""
    return "; ".join(f"{s.upper()} " + " ".join(f"{p.upper()} {lo:g}-{hi:g}" for p, (lo, hi) in r.items())
                     for s, r in SCAN_RANGES_MS.items())
