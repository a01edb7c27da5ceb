"""The paired test of the claim experiment."""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from ..errors import InputError

__all__ = ["sign_flip_p"]


def sign_flip_p(differences: Sequence[float]) -> float:
    """Two-sided p of the paired differences' mean under random signs: exact over all 2^n flips (1 <= n <= 20)."""
    d = np.asarray(differences, float)
    if not 1 <= len(d) <= 20:
        raise InputError(f"the exact sign-flip test takes 1 to 20 pairs, not {len(d)}")
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12))
