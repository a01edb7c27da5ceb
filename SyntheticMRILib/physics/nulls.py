"""Null points of inversion recovery: the inversion times that null a tissue.

Plain floats and :mod:`math` (no torch), so that the presets, and the Slicer
GUI that shows them, load before PyTorch is installed. The tests check each null
against the signal equations of :mod:`SyntheticMRILib.physics.equations`.
"""
from __future__ import annotations

import math
from typing import Tuple

__all__ = ["null_ti", "double_ir_null_tis"]


def null_ti(t1: float, tr: float) -> float:
    """The TI that nulls a tissue of longitudinal relaxation ``t1`` at repetition ``tr`` (ms).

    Solves ``1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0``:
    ``TI = T1 * (ln 2 - ln(1 + exp(-TR/T1)))``, which tends to ``T1 ln 2`` for TR >> T1.
    """
    return float(t1) * (math.log(2.0) - math.log1p(math.exp(-float(tr) / float(t1))))


def double_ir_null_tis(t1_a: float, t1_b: float, tr: float, iterations: int = 50) -> Tuple[float, float]:
    """The (TI1, TI2) that null two tissues at once in double inversion recovery.

    Newton's method on the two DIR null conditions
    ``1 - 2 exp(-TI2/T1) + 2 exp(-TI1/T1) - exp(-TR/T1) = 0``, started from the
    single-IR null points (the longer-T1 tissue sets TI1). Returns floats in ms,
    TI1 > TI2. Raises ``ValueError`` if no solution with 0 < TI2 < TI1 < TR is found.
    """
    no_pair = ValueError(f"no double-IR pair nulls T1 = {t1_a:g} and {t1_b:g} ms at TR = {tr:g} ms")
    if not (t1_a > 0 and t1_b > 0):
        raise no_pair
    t1s = (float(t1_a), float(t1_b))
    starts = [null_ti(t1, tr) for t1 in t1s]
    x1, x2 = max(starts), min(starts) * 0.5

    def residual(ti1: float, ti2: float) -> Tuple[float, float]:
        return tuple(1 - 2 * math.exp(-ti2 / t1) + 2 * math.exp(-ti1 / t1) - math.exp(-tr / t1) for t1 in t1s)

    for _ in range(iterations):
        r = residual(x1, x2)
        if max(map(abs, r)) < 1e-12:
            break
        # Jacobian rows (d/dTI1, d/dTI2) per tissue; equal T1s make it singular: one tissue cannot be "two".
        (a, b), (c, d) = ((-2 * math.exp(-x1 / t1) / t1, 2 * math.exp(-x2 / t1) / t1) for t1 in t1s)
        det = a * d - b * c
        if abs(det) < 1e-300 or not math.isfinite(det):
            raise no_pair
        x1, x2 = x1 - (d * r[0] - b * r[1]) / det, x2 - (a * r[1] - c * r[0]) / det
    if not (0 < x2 < x1 < tr) or max(map(abs, residual(x1, x2))) > 1e-6:
        raise no_pair
    return x1, x2
