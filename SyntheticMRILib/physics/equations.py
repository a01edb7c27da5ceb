"""The physics layer: MR signal equations for synthetic contrasts.

This module is the only place a signal equation lives. Training, the Slicer
preview, the command line and the tests all call these functions.

Conventions
-----------
* Times (T1, T2, TR, TE, TI) in milliseconds, flip angle in degrees, PD as a
  fraction of water. Signals are in the units of PD.
* Every function is pure torch, differentiable with respect to the maps and to
  every sequence parameter, and broadcasts: maps of shape ``(D, H, W)`` with a
  parameter of shape ``(K, 1, 1, 1)`` give ``K`` contrasts at once.
* A relaxation time ``T <= 0`` (or below 1 ns) means "no tissue": its decay
  factor ``exp(-t / T)`` is taken as 0, the limit ``T -> 0+``. Background voxels
  (T1 = T2 = PD = 0) therefore give exactly 0, with finite gradients.
* Magnetization is steady state with ideal spoiling of the transverse
  magnetization before each excitation. The spin echo models its refocusing
  pulse exactly; the inversion-recovery family uses the TE << TR form, in which
  the readout leaves Mz = 0 (refocusing pulses of the readout are neglected).
* With no T2* map, the gradient echo uses T2 in place of T2*.

References
----------
Bernstein MA, King KF, Zhou XJ. Handbook of MRI Pulse Sequences. Elsevier 2004
(ch. 14 spin echo, 14.2 inversion recovery, 14.1 spoiled gradient echo).
Redpath TW, Smith FW. Technical note: use of a double inversion recovery pulse
sequence to image selectively grey or white brain matter. Br J Radiol 1994;67:1258-63.
Ma YJ, Fan S, Shao H, et al. Use of multiplied, added, subtracted and/or fitted
inversion recovery (MASTIR) pulse sequences. Quant Imaging Med Surg 2020;10:1334-69.
"""
from __future__ import annotations

from typing import Union

import torch

Param = Union[float, torch.Tensor]

__all__ = [
    "decay",
    "spin_echo",
    "inversion_recovery",
    "double_inversion_recovery",
    "spoiled_gradient_echo",
    "divided_subtracted_ir",
]


# Relaxation times below this (ms) count as "no tissue": at or below 0 by definition,
# and tiny positive ones too, whose gradient t/T^2 would overflow to NaN.
NO_TISSUE_BELOW = 1e-6


def decay(t: Param, relaxation: torch.Tensor) -> torch.Tensor:
    """``exp(-t / T)`` for tissue, and 0 where ``T`` < 1 ns (its T -> 0+ limit).

    The division only ever sees the safe value 1 in no-tissue voxels, so neither
    the value nor the gradient can become NaN there.
    """
    tissue = relaxation > NO_TISSUE_BELOW
    safe = torch.where(tissue, relaxation, torch.ones_like(relaxation))
    return torch.where(tissue, torch.exp(-t / safe), torch.zeros_like(safe))


def spin_echo(t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, tr: Param, te: Param) -> torch.Tensor:
    """Spin echo, full form with the refocusing pulse at TE/2.

    ``PD * (1 - 2 exp(-(TR - TE/2)/T1) + exp(-TR/T1)) * exp(-TE/T2)``;
    for TE << TR it tends to the familiar ``PD * (1 - exp(-TR/T1)) * exp(-TE/T2)``.
    """
    mz = 1 - 2 * decay(tr - te / 2, t1) + decay(tr, t1)
    return pd * mz * decay(te, t2)


def inversion_recovery(
    t1: torch.Tensor,
    t2: torch.Tensor,
    pd: torch.Tensor,
    tr: Param,
    te: Param,
    ti: Param,
    phase_sensitive: bool = False,
) -> torch.Tensor:
    """Inversion recovery with a spin-echo readout (TE << TR form).

    ``PD * (1 - 2 exp(-TI/T1) + exp(-TR/T1)) * exp(-TE/T2)``, its magnitude by
    default; ``phase_sensitive=True`` keeps the sign (PSIR). FLAIR and STIR are
    this sequence with TI at the null point of CSF or fat (see :func:`SyntheticMRILib.physics.nulls.null_ti`).
    """
    signal = pd * (1 - 2 * decay(ti, t1) + decay(tr, t1)) * decay(te, t2)
    return signal if phase_sensitive else signal.abs()


def double_inversion_recovery(
    t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, tr: Param, te: Param, ti1: Param, ti2: Param
) -> torch.Tensor:
    """Double inversion recovery, magnitude (Redpath & Smith 1994).

    Two inversions at TI1 and TI2 (TI1 > TI2) before the readout, both times
    measured to the readout, which leaves Mz = 0:
    ``PD * |1 - 2 exp(-TI2/T1) + 2 exp(-TI1/T1) - exp(-TR/T1)| * exp(-TE/T2)``.
    """
    mz = 1 - 2 * decay(ti2, t1) + 2 * decay(ti1, t1) - decay(tr, t1)
    return (pd * mz * decay(te, t2)).abs()


def spoiled_gradient_echo(
    t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, tr: Param, te: Param, flip: Param
) -> torch.Tensor:
    """Spoiled gradient echo (FLASH/SPGR) with flip angle ``flip`` in degrees.

    ``PD * sin(a) (1 - E1) / (1 - cos(a) E1) * exp(-TE/T2*)`` with E1 = exp(-TR/T1);
    T2 stands in for T2*.
    """
    alpha = torch.deg2rad(torch.as_tensor(flip, dtype=t1.dtype, device=t1.device))
    e1 = decay(tr, t1)
    return pd * torch.sin(alpha) * (1 - e1) / (1 - torch.cos(alpha) * e1) * decay(te, t2)


def divided_subtracted_ir(
    t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, tr: Param, te: Param, ti_long: Param, ti_short: Param
) -> torch.Tensor:
    """Divided subtracted inversion recovery, dSIR (Ma et al. 2020, MASTIR).

    ``(|S(TI_short)| - |S(TI_long)|) / (|S(TI_short)| + |S(TI_long)|)`` from two
    magnitude IR images with equal TR and TE. PD and T2 cancel, so the contrast
    depends on T1 alone, in [-1, 1]: it rises steeply from -1 at the tissue nulled
    by TI_short (white matter in the preset) to +1 at the tissue nulled by TI_long
    (grey matter), the "middle domain" where small T1 changes show. No-tissue
    voxels give 0.
    """
    short = inversion_recovery(t1, t2, pd, tr, te, ti_short)
    long_ = inversion_recovery(t1, t2, pd, tr, te, ti_long)
    total = short + long_
    nonzero = total > 0
    return torch.where(nonzero, (short - long_) / torch.where(nonzero, total, torch.ones_like(total)), torch.zeros_like(total))

