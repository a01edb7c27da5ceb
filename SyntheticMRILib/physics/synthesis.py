"""Running a protocol on maps: the differentiable path and the whole-volume path.

:func:`synthesize` is the one entry point for training and tests (autograd on).
:func:`synthesize_volume` computes a whole volume with no gradient, as fast as
the platform allows, through the very same equations:

* eager (default): the volume is processed in cache-sized chunks, which on a
  CPU is several times faster than one pass of whole-volume temporaries and
  starts instantly; on a GPU the volume goes in one pass.
* fused: ``torch.compile`` fuses the equation into one kernel (about 4x faster
  than NumPy on 2 CPU cores, near the memory-bandwidth limit on a GPU) after a
  one-off compilation of seconds, worth it for repeated full-volume updates
  (slider release in Slicer, batches). Sequence parameters enter as tensors so
  new TR/TE/TI values do not recompile. Where no compiler is available
  (Slicer on Windows, for one) it falls back to eager with a warning.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, Dict, Tuple

import torch

from . import equations
from .protocols import Protocol

__all__ = ["synthesize", "synthesize_volume"]

# The signal equation of each sequence of physics.protocols.SEQUENCES (a test checks both name the same keys).
SIGNALS: Dict[str, Callable[[Tuple[torch.Tensor, ...], Protocol], torch.Tensor]] = {
    "se": lambda m, p: equations.spin_echo(*m, p.tr, p.te),
    "ir": lambda m, p: equations.inversion_recovery(*m, p.tr, p.te, p.ti),
    "psir": lambda m, p: equations.inversion_recovery(*m, p.tr, p.te, p.ti, phase_sensitive=True),
    "dir": lambda m, p: equations.double_inversion_recovery(*m, p.tr, p.te, p.ti, p.ti2),
    "gre": lambda m, p: equations.spoiled_gradient_echo(*m, p.tr, p.te, p.flip),
    "dsir": lambda m, p: equations.divided_subtracted_ir(*m, p.tr, p.te, p.ti, p.ti2),
}

_CHUNK = 1 << 16  # voxels: the temporaries of one chunk stay in the L2 cache


def synthesize(t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, protocol: Protocol) -> torch.Tensor:
    """The weighted image of ``protocol`` from T1, T2 (ms) and PD (fraction of water).

    Pure torch and differentiable with respect to the maps and every parameter;
    the maps may be on any device and dtype and the parameters may be tensors
    that broadcast against them. Float parameters are validated; tensor (learnable)
    parameters are the caller's to keep in bounds.
    """
    if not any(torch.is_tensor(v) for v in (protocol.tr, protocol.te, protocol.ti, protocol.ti2, protocol.flip)):
        protocol.validate()
    return SIGNALS[protocol.sequence]((t1, t2, pd), protocol)


def _as_tensors(protocol: Protocol, like: torch.Tensor) -> Tuple:
    return tuple(
        None if v is None else torch.as_tensor(v, dtype=like.dtype, device=like.device)
        for v in (protocol.tr, protocol.te, protocol.ti, protocol.ti2, protocol.flip)
    )


@functools.lru_cache(maxsize=None)
def _fused_kernel(sequence: str) -> Callable:
    signal = SIGNALS[sequence]

    def kernel(t1, t2, pd, tr, te, ti, ti2, flip):
        return signal((t1, t2, pd), Protocol(sequence, tr, te, ti, ti2, flip))

    return torch.compile(kernel, dynamic=False)


_fusion_failed = False


def synthesize_volume(
    t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, protocol: Protocol, fused: bool = False
) -> torch.Tensor:
    """The whole weighted volume of ``protocol``, without autograd (see the module notes)."""
    global _fusion_failed
    protocol.validate()
    params = _as_tensors(protocol, t1)
    with torch.no_grad():
        if fused and not _fusion_failed:
            try:
                return _fused_kernel(protocol.sequence)(t1, t2, pd, *params)
            except Exception as error:  # no C++ compiler, no Triton, unsupported platform...
                _fusion_failed = True
                warnings.warn(f"torch.compile unavailable ({type(error).__name__}); using eager synthesis", RuntimeWarning)
        if t1.device.type != "cpu":
            return SIGNALS[protocol.sequence]((t1, t2, pd), protocol)
        out = torch.empty(torch.broadcast_shapes(t1.shape, t2.shape, pd.shape), dtype=t1.dtype)
        flat = [m.expand_as(out).reshape(-1) for m in (t1, t2, pd)]
        out_flat = out.view(-1)
        for start in range(0, out_flat.numel(), _CHUNK):
            part = slice(start, start + _CHUNK)
            out_flat[part] = SIGNALS[protocol.sequence](tuple(m[part] for m in flat), protocol)
        return out
