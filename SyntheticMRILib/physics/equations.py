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
* :func:`decay_factor` is the only exponential: ``exp(-t/T)`` computed as
  ``2 ** (-t log2(e) / T)`` (``exp2`` is several times cheaper than ``exp`` on
  CPUs). Whole-volume synthesis without autograd
  (:func:`SyntheticMRILib.physics.synthesis.synthesize_volume`) runs these same
  functions on chunks of the volume, handing them a tensor-like chunk (the
  ``torch.overrides`` protocol) that :func:`decay` passes back to; the chunk takes
  its decays from :func:`decay_clamped`: the same operations on tissue voxels,
  the same 0 for no tissue, one clamp per map instead of two ``where``.

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

import math
from typing import Optional, Union

import torch
from torch.overrides import handle_torch_function, has_torch_function

Param = Union[float, torch.Tensor]

__all__ = [
    "decay",
    "decay_factor",
    "decay_clamped",
    "vector_length",
    "spin_echo",
    "inversion_recovery",
    "double_inversion_recovery",
    "spoiled_gradient_echo",
    "divided_subtracted_ir",
]


# Relaxation times below this (ms) count as "no tissue": at or below 0 by definition,
# and tiny positive ones too, whose gradient t/T^2 would overflow to NaN.
NO_TISSUE_BELOW = 1e-6


LOG2_E = 1.0 / math.log(2.0)
# torch's element-wise CPU kernels split an array across threads in ranges of at least this many elements
# (at::internal::GRAIN_SIZE), and run each range through vectors of up to 64 bytes, two at a time.
_GRAIN = 32768
_VECTOR = 64


def vector_length(n: int) -> int:
    """The length >= ``n`` at which every thread's range of a torch CPU kernel is whole vectors.

    ``torch.exp2`` computes the last few elements of each range with a scalar function that rounds ~6 % of
    its results one ulp away from the vector one, so the same voxel could come out differently in arrays of
    other lengths (a preview band and the whole volume, a chunk and the differentiable path). Padded to this
    length (ranges are ``ceil(length / threads)`` long), every element takes the vector path.
    """
    threads, used = torch.get_num_threads(), 1
    while True:
        length = -(-n // (_VECTOR * used)) * _VECTOR * used
        now = 1 if length < _GRAIN or threads == 1 else min(threads, -(-length // _GRAIN))
        if now == used:
            return length
        used = now


def _exp2(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``2 ** x`` with every element through torch's vector kernel (:func:`vector_length`); on GPUs and in
    traced graphs (one fused kernel, rounding its own way) plain ``exp2``. With ``out`` (no autograd), ``x``
    must be its first ``x.numel()`` elements: ``out`` itself is the padding."""
    n = x.numel()
    if x.device.type != "cpu" or not isinstance(n, int) or n == 0 or torch.compiler.is_compiling() \
            or torch.compiler.is_exporting():
        return torch.exp2(x, out=x) if out is not None else torch.exp2(x)
    length = vector_length(n)
    if out is not None:
        if out.numel() >= length and out.is_contiguous():
            torch.exp2(out[:length], out=out[:length])
            return x
        return torch.exp2(x, out=x)
    if length == n:
        return torch.exp2(x)
    return torch.exp2(torch.nn.functional.pad(x.reshape(-1), (0, length - n)))[:n].view(x.shape)


def decay_factor(t: Param, relaxation: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``exp(-t / T)`` written as ``2 ** (-t log2(e) / T)``: the formula of every decay, no masking.

    ``exp2`` gives the same factor (within 2e-6 in float32) about four times faster than ``exp`` in torch's
    CPU kernels. :func:`decay` applies it to safe relaxation times; whole-volume synthesis calls it with
    ``out`` on clamped ones (:func:`decay_clamped`): the same torch operations, so the same numbers.
    ``out`` (no autograd) is a 1-d buffer of at least ``relaxation.numel()`` elements, ideally
    :func:`vector_length` of it; the factor is its first ``relaxation.numel()``, returned.
    """
    numerator = torch.as_tensor(-t * LOG2_E, dtype=relaxation.dtype, device=relaxation.device)
    if out is None:
        return _exp2(torch.div(numerator, relaxation))
    exponent = torch.div(numerator, relaxation.reshape(-1), out=out[: relaxation.numel()])
    return _exp2(exponent, out=out)


def decay(t: Param, relaxation: torch.Tensor) -> torch.Tensor:
    """``exp(-t / T)`` for tissue, and 0 where ``T`` < 1 ns (its T -> 0+ limit).

    The division only ever sees the safe value 1 in no-tissue voxels, so neither
    the value nor the gradient can become NaN there. A tensor-like ``relaxation``
    (``torch.overrides``: the chunks of whole-volume synthesis) computes it itself,
    through :func:`decay_clamped`.
    """
    if has_torch_function((relaxation,)):
        return handle_torch_function(decay, (relaxation,), t, relaxation)
    tissue = relaxation > NO_TISSUE_BELOW
    safe = torch.where(tissue, relaxation, torch.ones_like(relaxation))
    return torch.where(tissue, decay_factor(t, safe), torch.zeros_like(safe))


# From this time (ms) on, 2 ** (-t log2(e) / NO_TISSUE_BELOW) = exp(-1000) or less is exactly 0 in float32
# and float64 (their smallest non-zero values are 2**-149 and 2**-1074): clamping T to NO_TISSUE_BELOW alone
# makes a no-tissue decay 0. Every TR, TI and TR - TE/2 that physics.protocols accepts is above it.
UNDERFLOW_FROM = 1e-3


def decay_clamped(
    t: Param, relaxation: torch.Tensor, clamped: torch.Tensor, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """:func:`decay` ``(t, relaxation)`` without autograd, from ``clamped = relaxation.clamp(min=NO_TISSUE_BELOW)``.

    One clamp serves all the decays of a map, and no ``where``: tissue voxels (``T`` above the threshold,
    where clamping changes nothing) get exactly :func:`decay`'s value, no-tissue voxels exactly 0, by
    underflow for ``t`` >= :data:`UNDERFLOW_FROM` and by a mask below (TE = 0, tensor times). A NaN ``T``
    gives NaN here (0 in :func:`decay`); maps are checked for NaN before synthesis.
    """
    factor = decay_factor(t, clamped, out=out)
    if not (isinstance(t, (int, float)) and t >= UNDERFLOW_FROM):
        factor.mul_((relaxation > NO_TISSUE_BELOW).reshape(factor.shape))
    return factor


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

