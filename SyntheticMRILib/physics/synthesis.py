"""Running a protocol on maps: the differentiable path and the whole-volume path.

:func:`synthesize` is the one entry point for training and tests (autograd on).
:func:`synthesize_volume` computes a whole volume with no gradient, as fast as
the platform allows, through the very same equations (:data:`SIGNALS`):

* default (``fused=False``; the CLI, batch, the Slicer module): on a CPU the
  signal function runs, unchanged, on chunks of the volume sized to the CPU
  caches, torch's threads sharing each operation. A chunk is a tensor-like
  (:class:`_Chunk`, the ``torch.overrides`` protocol): each operator runs the
  torch operation it runs on plain tensors, into one of a few reused buffers,
  the last one straight into the volume; exact scalings and one offset stay
  pending (``1 - 2 * e`` is one ``torch.add(1, e, alpha=-2)``); a decay is
  :func:`~.equations.decay_clamped` (one clamp per map, no ``where``). Nothing is
  rounded differently, so the volume is :func:`synthesize`'s to the last bit,
  several times faster than NumPy on the same formula, with no start-up cost.
  On a GPU the volume goes in one pass.
* fused (``fused=True``): one compiled kernel. On a CPU it is built ahead of time
  by AOTInductor (``torch.export`` and the inductor compiler of ``torch.compile``)
  into torch inductor's on-disk cache, once per sequence and dtype (~10 s); every
  later process loads it in milliseconds, where ``torch.compile`` re-traces for
  seconds, so with a warm cache it pays off from the first call (about twice as
  fast as the default path on 2 cores; it rounds in its own way, within 1e-6).
  On a GPU it is ``torch.compile``, near the memory-bandwidth limit. Sequence
  parameters enter as tensors so new TR/TE/TI values do not recompile. Where no
  compiler is available (Slicer on Windows, for one) it falls back to the default
  path with a warning.

Both CPU paths write into a result allocated by NumPy, which asks Linux for
transparent huge pages for large arrays: the first write of a fresh 256^3
float32 volume then takes ~32 page faults instead of ~16 000 (~25 ms here).
"""
from __future__ import annotations

import functools
import getpass
import hashlib
import math
import os
import platform
import re
import tempfile
import threading
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
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

# Voxels per chunk (at most; see _chunked): torch splits each operation of a chunk between its threads
# (above 32k voxels), the live buffers of a chunk (6-8 for most sequences, 16 for dSIR) stay in the L3
# cache, and the Python work per chunk (~40 us) is ~2 % of it. On 2 cores 512k measured faster than
# 128k-256k (Python, OpenMP start-up per operation) for IR and DIR, and 256k fastest for dSIR; 1M was
# slower for all (cache).
_CHUNK = 1 << 19
_FIRST_CHUNK = 1 << 16
_CACHE_BUDGET = 16 << 20  # bytes of live buffers per chunk: half the L3 cache of this 2-core machine
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


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


# ------------------------------------------------------------------ the chunked CPU evaluation


class _Pool:
    """Buffers of one chunk's length, handed out for results and given back when no chunk uses them."""

    def __init__(self, capacity: int, dtype: torch.dtype):
        self.capacity, self.dtype = capacity, dtype
        self.length = capacity  # of the chunk being evaluated (the last one is shorter)
        # room after any chunk for the padding of exp2 (equations.vector_length: < 64 per thread)
        self.threads = torch.get_num_threads()
        self.allocation = capacity + equations.vector_length(1) * self.threads
        self.free: List[torch.Tensor] = []
        self.free_masks: List[torch.Tensor] = []  # bool buffers (torch.where's exact fallback)
        self.created = 0
        self.in_use = self.peak = 0  # buffers held now, and the most held at once since peak was reset
        self._scalars: Dict[float, torch.Tensor] = {}

    def take(self, mask: bool = False) -> Tuple["_Buffer", torch.Tensor]:
        free = self.free_masks if mask else self.free
        if free:
            base = free.pop()
        else:
            base = torch.empty(self.allocation, dtype=torch.bool if mask else self.dtype)
            self.created += 1
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        return _Buffer(base, self), base[: self.length]

    def scalar(self, value: float) -> torch.Tensor:
        """``value`` as a 0-dim tensor (``c + s * x`` is ``torch.add(c, x, alpha=s)``, which wants a tensor first)."""
        if value not in self._scalars:
            if len(self._scalars) > 64:
                self._scalars.clear()
            self._scalars[value] = torch.tensor(value, dtype=self.dtype)
        return self._scalars[value]


class _Buffer:
    """A pool buffer in use; back to the pool when nothing holds it any more (CPython frees at once)."""

    __slots__ = ("base", "pool")

    def __init__(self, base: torch.Tensor, pool: _Pool):
        self.base, self.pool = base, pool

    def __del__(self):
        self.pool.in_use -= 1
        (self.pool.free_masks if self.base.dtype == torch.bool else self.pool.free).append(self.base)


class _Cell:
    """What a chunk's ``data`` is: a tensor, or the one torch call that computes it when first read, so
    that the last call of an equation can write straight into the result (:meth:`_Chunk.store`)."""

    __slots__ = ("tensor", "buffer", "pending")

    def __init__(self, tensor: Optional[torch.Tensor] = None, buffer: Optional[_Buffer] = None, pending=None):
        self.tensor, self.buffer, self.pending = tensor, buffer, pending

    def get(self, pool: _Pool) -> torch.Tensor:
        if self.tensor is None:
            self.buffer, out = pool.take(mask=self.pending.mask)
            self.run(self.buffer.base if self.pending.whole else out)
            self.tensor, self.pending = out, None
        return self.tensor

    def run(self, out: torch.Tensor) -> None:
        """The pending call, into ``out`` (which the cell does not keep: the caller may overwrite it)."""
        self.pending.op(*self.pending.args, out=out, **self.pending.kwargs)


class _Call(NamedTuple):
    """A pending torch call: ``op(*args, out=..., **kwargs)``; ``inputs``, the cells it reads, stay alive
    until it has run; ``mask``: its buffer is a bool one; ``whole``: ``out`` is the whole pool buffer
    (longer than the chunk: the padding of exp2) rather than the chunk's length of it."""

    op: Callable
    args: list
    kwargs: dict
    inputs: list
    mask: bool
    whole: bool


def _number(value) -> Optional[float]:
    """``value`` as a float if it is a scalar (a number or a 0-dim CPU tensor, e.g. sin(flip)), else None."""
    if type(value) is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if torch.is_tensor(value) and value.dim() == 0 and value.device.type == "cpu" and not value.is_complex():
        return float(value)
    return None


def _exact(k: float) -> bool:
    """Whether multiplying by ``k`` is exact in binary floating point, denormals included: ``k`` = +-2**j, j >= 0."""
    if k == 0.0 or not math.isfinite(k):
        return False
    mantissa, exponent = math.frexp(abs(k))
    return mantissa == 0.5 and exponent >= 1


def _plain(value, keep: List["_Chunk"]):
    """A chunk's value as a plain tensor (computed if it is pending; a mask as bool), its chunk appended to
    ``keep`` so that its buffer stays out of the pool while the tensor is used; anything else as it is."""
    if isinstance(value, _Chunk):
        chunk = value.as_bool() if value.mask else value.plain()
        keep.append(chunk)
        return chunk.data
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, keep) for v in value)
    return value


def _where_by_mask(mask: torch.Tensor, a, b, complement: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask != 0, a, b)`` for a 0/1 float mask, as ``a * mask + b * (1 - mask)``: exact
    wherever it is finite (the products are by 0 and 1, the sums with an exact 0), ~5x faster than
    ``torch.where`` on CPU, and kept only if it is finite everywhere; else ``torch.where`` itself (an inf or
    NaN in the branch not taken would leak into the product). ``complement`` is ``1 - mask``, None if b is 0."""
    torch.mul(a, mask, out=out)
    if complement is not None:
        if torch.is_tensor(b) and b.dim() == 0:
            out.add_(complement, alpha=float(b))
        else:
            out.addcmul_(b, complement)
    if not math.isfinite(float(out.sum())):
        torch.where(mask != 0, a, b, out=out)
    return out


def _fill(value: float, out: torch.Tensor) -> torch.Tensor:
    return out.fill_(value)


_FILLS = {torch.ones_like: 1.0, torch.zeros_like: 0.0}


def _where_operand(value, pool: "_Pool"):
    """An operand of ``torch.where``: a constant chunk or a number as a 0-dim tensor, a chunk as a plain chunk
    (which the pending call keeps alive)."""
    if isinstance(value, _Chunk):
        if value.constant is not None:
            return pool.scalar(value.constant)
        return value.as_bool() if value.mask else value.plain()
    number = _number(value)
    return pool.scalar(number) if number is not None else value


# Tensor methods that Python calls for ``tensor <op> chunk`` before trying the chunk's reflected operator.
_REFLECTED = (torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul, torch.Tensor.div, torch.Tensor.gt, torch.Tensor.lt)


class _Chunk:
    """A chunk of the volume (a map, a factor or a partial result) as a signal equation computes with it.

    A tensor-like in the sense of ``torch.overrides``. Every operator runs the torch operation the same
    expression runs on plain tensors, into a buffer of a :class:`_Pool` (so a chunk of any equation
    allocates nothing), with two savings that change no rounding, so that the result is the same number:

    * exact scalings (by +-1, 2, 4...) and one scalar offset stay pending: the chunk is worth
      ``offset + scale * f(data)`` (``f`` the absolute value or the identity), computed in one rounding
      when needed. ``1 - 2 * e`` is one ``torch.add(1, e, alpha=-2)``, ``-x`` and ``abs(2 * x)`` cost
      nothing, and a sum with a pending scale is one ``add`` with ``alpha``;
    * an operation runs when its result is first read, so the last one of an equation writes straight
      into the volume (:meth:`store`).

    :func:`~.equations.decay` of a chunk reaches :meth:`decay`: :func:`~.equations.decay_clamped`, one clamp
    per map, each factor once (dSIR asks for exp(-TR/T1) and exp(-TE/T2) twice). Comparisons give float
    masks and ``torch.where`` on them a product (:meth:`_select`); other torch functions run on plain
    tensors. No autograd: only :func:`synthesize_volume` makes these, under no_grad.
    """

    __slots__ = ("cell", "scale", "offset", "absolute", "constant", "mask", "_pool", "_clamped", "_decays", "_forms")

    def __init__(self, cell: _Cell, pool: _Pool, scale: float = 1.0, offset: float = 0.0, absolute: bool = False):
        self.cell, self._pool = cell, pool
        self.scale, self.offset, self.absolute = scale, offset, absolute
        self.constant: Optional[float] = None  # the value of every voxel, if known (ones_like, zeros_like)
        self.mask = False  # a comparison: 1.0 where true, 0.0 where false (float masks are ~4x faster than bool)
        self._clamped: Optional[_Chunk] = None
        self._decays: Dict[float, _Chunk] = {}
        self._forms: Dict[str, _Chunk] = {}  # derived chunks read more than once: |x|, 1 - mask, bool mask

    @classmethod
    def of(cls, tensor: torch.Tensor, pool: _Pool) -> "_Chunk":
        return cls(_Cell(tensor), pool)

    # -- what the equations read
    @property
    def data(self) -> torch.Tensor:
        return self.cell.get(self._pool)

    @property
    def dtype(self) -> torch.dtype:
        return self._pool.dtype if self.cell.tensor is None else self.cell.tensor.dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # -- evaluation
    def _emit(self, op: Callable, *args, mask: bool = False, whole: bool = False, **kwargs) -> "_Chunk":
        """A plain chunk that is ``op(*args, out=...)``, chunks in ``args`` standing for their ``data`` (see
        :class:`_Call` for ``mask`` and ``whole``)."""
        inputs, plain = [], []
        for a in args:
            if isinstance(a, _Chunk):
                inputs.append(a.cell)
                a = a.cell.get(a._pool)
            plain.append(a)
        return _Chunk(_Cell(pending=_Call(op, plain, kwargs, inputs, mask, whole)), self._pool)

    def _with(self, scale: float, offset: float, absolute: bool = False) -> "_Chunk":
        return _Chunk(self.cell, self._pool, scale, offset, absolute)

    def _form(self, name: str, make: Callable[[], "_Chunk"]) -> "_Chunk":
        if name not in self._forms:
            self._forms[name] = make()
        return self._forms[name]

    def _scaled(self) -> "_Chunk":
        """The same value as ``scale * data`` (no offset, no pending absolute value)."""
        if self.offset != 0.0:
            return self.plain()
        if self.absolute:  # kept: dSIR reads |S(TI)| twice
            return self._form("abs", lambda: self._emit(torch.abs, self))._with(self.scale, 0.0)
        return self

    def plain(self) -> "_Chunk":
        """The same value with nothing pending but (perhaps) its one torch call."""
        if self.scale == 1.0 and self.offset == 0.0 and not self.absolute:
            return self
        base = self._with(self.scale, 0.0, self.absolute)._scaled() if self.absolute else self
        if self.offset == 0.0:
            return self._emit(torch.mul, base, base.scale)
        return self._emit(torch.add, self._pool.scalar(self.offset), base, alpha=base.scale)

    def tensor(self) -> torch.Tensor:
        """The value as a tensor (use it at once: its buffer may go back to the pool when the call returns)."""
        return self.plain().data

    def store(self, out: torch.Tensor) -> None:
        """Write the value into ``out``; a pending last call runs straight into it."""
        if self.cell.tensor is None and not self.cell.pending.whole:
            self.cell.run(out)
            source = out
        else:
            source = self.data
        if self.absolute:
            source = torch.abs(source, out=out)
        if self.offset != 0.0:
            torch.add(self._pool.scalar(self.offset), source, alpha=self.scale, out=out)
        elif self.scale != 1.0:
            torch.mul(source, self.scale, out=out)
        elif source is not out:
            out.copy_(source)

    def decay(self, t) -> "_Chunk":
        """``exp(-t / self)`` through :func:`~.equations.decay_clamped`: this map clamped once, each factor once."""
        plain = self.plain()
        if plain is not self:
            return plain.decay(t)
        key = _number(t)
        if key is not None and key in self._decays:
            return self._decays[key]
        if self._clamped is None:
            self._clamped = self._emit(torch.clamp, self, min=equations.NO_TISSUE_BELOW)
        factor = self._emit(equations.decay_clamped, t if key is None else key, self, self._clamped, whole=True)
        if key is not None:
            self._decays[key] = factor
        return factor

    # -- a scalar: exact ones stay pending, others are the torch operation itself
    def _times(self, k: float) -> "_Chunk":
        if _exact(k):
            return self._with(self.scale * k, self.offset * k, self.absolute)
        scaled = self._scaled()  # k * (s d) = (k s) d exactly, then one rounding
        return self._emit(torch.mul, scaled, k * scaled.scale)

    def _plus(self, k: float, sign: float = 1.0) -> "_Chunk":
        """``k + sign * self``."""
        base = self if self.offset == 0.0 else self.plain()
        return base._with(sign * base.scale, k, base.absolute)

    # -- two chunks: one torch call on their scaled forms
    def _sum(self, other: "_Chunk", sign: float) -> "_Chunk":
        a, b = self._scaled(), other._scaled()
        if abs(b.scale) >= abs(a.scale):  # sa (da + sign (sb/sa) db): the ratio is a power of two >= 1, exact
            return self._emit(torch.add, a, b, alpha=sign * b.scale / a.scale)._with(a.scale, 0.0)
        return self._emit(torch.add, b, a, alpha=a.scale / (sign * b.scale))._with(sign * b.scale, 0.0)

    def _product(self, other: "_Chunk") -> "_Chunk":
        a, b = self._scaled(), other._scaled()
        return self._emit(torch.mul, a, b)._with(a.scale * b.scale, 0.0)

    def _quotient(self, other: "_Chunk") -> "_Chunk":
        a, b = self._scaled(), other._scaled()
        if not _exact(a.scale / b.scale):
            a, b = a.plain(), b.plain()
        return self._emit(torch.div, a, b)._with(a.scale / b.scale, 0.0)

    # -- operators
    def __add__(self, other):
        k = _number(other)
        if k is not None:
            return self._plus(k)
        if isinstance(other, _Chunk):
            return self._sum(other, 1.0)
        return self._emit(torch.add, self.plain(), other)

    __radd__ = __add__

    def __sub__(self, other):
        k = _number(other)
        if k is not None:
            return self._plus(-k)
        if isinstance(other, _Chunk):
            return self._sum(other, -1.0)
        return self._emit(torch.sub, self.plain(), other)

    def __rsub__(self, other):
        k = _number(other)
        if k is not None:
            return self._plus(k, sign=-1.0)
        return self._emit(torch.sub, other, self.plain())

    def __mul__(self, other):
        k = _number(other)
        if k is not None:
            return self._times(k)
        if isinstance(other, _Chunk):
            return self._product(other)
        return self._emit(torch.mul, self.plain(), other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        k = _number(other)
        if k is not None:
            if k != 0.0 and _exact(1.0 / k):
                return self._times(1.0 / k)
            scaled = self._scaled()  # (s d) / k = s (d / k) exactly, then one rounding
            return self._emit(torch.div, scaled, k)._with(scaled.scale, 0.0)
        if isinstance(other, _Chunk):
            return self._quotient(other)
        return self._emit(torch.div, self.plain(), other)

    def __rtruediv__(self, other):
        # as torch.Tensor.__rtruediv__: k / x is x.reciprocal() * k
        return self._emit(torch.reciprocal, self.plain()) * other

    def __neg__(self):
        return self._times(-1.0)

    def __abs__(self):
        if self.offset == 0.0:  # |s f(d)| = |s| |d|
            return self._with(abs(self.scale), 0.0, True)
        return self.plain()._with(1.0, 0.0, True)

    abs = __abs__

    def _compare(self, op: Callable, other) -> "_Chunk":
        result = self._emit(op, self.plain(), other.plain() if isinstance(other, _Chunk) else other)
        result.mask = True
        return result

    def __gt__(self, other):
        return self._compare(torch.gt, other)

    def __lt__(self, other):
        return self._compare(torch.lt, other)

    def as_bool(self) -> "_Chunk":
        """A mask as a bool chunk, for anything but :meth:`_select`."""
        return self._form("bool", lambda: self._emit(torch.ne, self, 0.0, mask=True))

    def _select(self, a, b) -> "_Chunk":
        """``torch.where(self, a, b)`` for a mask, through :func:`_where_by_mask`."""
        pool = self._pool
        a, b = _where_operand(a, pool), _where_operand(b, pool)
        zero = torch.is_tensor(b) and b.dim() == 0 and float(b) == 0.0
        complement = None if zero else self._form("complement", lambda: self._emit(torch.sub, pool.scalar(1.0), self))
        return self._emit(_where_by_mask, self, a, b, complement)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is equations.decay:
            t, relaxation = args  # as equations.decay hands them over
            return relaxation.decay(t)
        if func in _REFLECTED:
            return NotImplemented  # Python then calls the chunk's reflected operator
        chunk = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, _Chunk))
        if func in _FILLS and len(args) == 1 and not kwargs:  # a pool buffer, filled only if read as a tensor
            constant = chunk._emit(_fill, _FILLS[func])
            constant.constant = _FILLS[func]
            return constant
        if func is torch.where and len(args) == 3 and not kwargs:
            if isinstance(args[0], _Chunk) and args[0].mask:
                return args[0]._select(args[1], args[2])
            condition, a, b = (_where_operand(x, chunk._pool) for x in args)
            return chunk._emit(torch.where, condition, a, b)
        keep: List[_Chunk] = []
        result = func(*_plain(args, keep), **{k: _plain(v, keep) for k, v in kwargs.items()})
        return _Chunk.of(result, chunk._pool) if torch.is_tensor(result) else result


_pools = threading.local()


def _pool(dtype: torch.dtype) -> _Pool:
    """This thread's pool for ``dtype``, kept between calls (6-16 buffers of 2 MiB for float32): fresh
    buffers would cost ~5 ms of page faults each call. A new one when the chunk size or torch's thread
    count (the padding of exp2) changes."""
    pools = _pools.__dict__.setdefault("by_dtype", {})
    pool = pools.get(dtype)
    if pool is None or pool.capacity != _CHUNK or pool.threads != torch.get_num_threads():
        pools[dtype] = pool = _Pool(_CHUNK, dtype)
    return pool


def _broadcast_shape(*shapes) -> Tuple[int, ...]:
    """``torch.broadcast_shapes``, which imports sympy on its first call (~0.5 s of start-up)."""
    return tuple(np.broadcast_shapes(*(tuple(shape) for shape in shapes)))


def _new_volume(shape: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype in _NUMPY_DTYPES:
        return torch.from_numpy(np.empty(tuple(shape), dtype=_NUMPY_DTYPES[dtype]))
    return torch.empty(shape, dtype=dtype)


def _chunked(signal: Callable, maps: Tuple[torch.Tensor, ...], protocol: Protocol, out: torch.Tensor) -> None:
    """``out[...] = signal(maps, protocol)``, chunk by chunk through :class:`_Chunk`.

    The first chunk is small; it shows how many buffers the equation holds at once, and the others are as
    long as keeps them all within :data:`_CACHE_BUDGET` (512k voxels for IR in float32, 256k for dSIR, whose
    16 buffers at 512k would fill the whole L3 cache)."""
    flat = [m.expand_as(out).reshape(-1) for m in maps]  # views of contiguous maps; copies of the others
    out_flat = out.view(-1)
    pool = _pool(out.dtype)
    n = out_flat.numel()
    start, length = 0, min(pool.capacity, _FIRST_CHUNK)
    pool.peak = pool.in_use
    try:
        while start < n:
            stop = min(start + length, n)
            pool.length = stop - start
            result = signal(tuple(_Chunk.of(m[start:stop], pool) for m in flat), protocol)
            if isinstance(result, _Chunk):
                result.store(out_flat[start:stop])
            else:
                out_flat[start:stop].copy_(result)
            del result
            if start == 0:
                fit = _CACHE_BUDGET // (out.element_size() * max(pool.peak, 1))
                length = min(pool.capacity, max(_FIRST_CHUNK, fit // 4096 * 4096))
            start = stop
    finally:
        pool.length = pool.capacity


def _chunked_reference(signal: Callable, maps: Tuple[torch.Tensor, ...], protocol: Protocol, out: torch.Tensor) -> None:
    """The same on plain tensors (maps of other dtypes, mixed dtypes)."""
    flat = [m.expand_as(out).reshape(-1) for m in maps]
    out_flat = out.view(-1)
    for start in range(0, out_flat.numel(), _CHUNK):
        part = slice(start, start + _CHUNK)
        out_flat[part] = signal(tuple(m[part] for m in flat), protocol)


# ------------------------------------------------------------------ the fused kernel

# Bump when the calling convention of the CPU kernel changes (the physics itself is in the digest).
_KERNEL_FORMAT = 1


class _Kernel(torch.nn.Module):
    """``out[:] = signal`` of one sequence from flat maps and 0-dim parameters: what the CPU kernel compiles.

    Writing into ``out`` lets the caller hand over a NumPy-allocated (huge-page) result."""

    def __init__(self, sequence: str):
        super().__init__()
        self.sequence = sequence

    def forward(self, t1, t2, pd, out, tr, te, ti, ti2, flip):
        out.copy_(SIGNALS[self.sequence]((t1, t2, pd), Protocol(self.sequence, tr, te, ti, ti2, flip)))
        return ()


def _kernel_cache_dir() -> str:
    """torch inductor's on-disk cache: ``TORCHINDUCTOR_CACHE_DIR``, else ``<tmp>/torchinductor_<user>``, as
    ``torch._inductor.runtime.cache_dir_utils.cache_dir`` has it (importing inductor alone takes ~1 s)."""
    directory = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if directory is None:
        try:
            user = getpass.getuser()
        except (KeyError, ModuleNotFoundError, OSError):
            user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
        directory = os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))
    return os.path.join(os.path.abspath(directory), "syntheticmri")


def _kernel_path(sequence: str, dtype: torch.dtype) -> str:
    """Where the compiled kernel of ``sequence`` lives: named by everything it depends on (the source of the
    equations and of :data:`SIGNALS`, torch, the CPU's vector instructions), so a stale one is never loaded."""
    digest = hashlib.sha256(str(_KERNEL_FORMAT).encode())
    for module_file in (equations.__file__, __file__):
        with open(module_file, "rb") as source:
            digest.update(source.read())
    for part in (torch.__version__, torch.backends.cpu.get_cpu_capability(), platform.machine(), str(dtype)):
        digest.update(part.encode())
    return os.path.join(_kernel_cache_dir(), f"{sequence}-{str(dtype).replace('torch.', '')}-{digest.hexdigest()[:20]}.pt2")


def _compile_cpu(kernel: _Kernel, dtype: torch.dtype) -> Callable:
    """The AOTInductor build of ``kernel`` for any number of voxels, from the cache or compiled into it.

    A warm start loads a shared library (milliseconds, without importing the compiler), where
    ``torch.compile`` would trace and look up its cache again in every new process (seconds)."""
    path = _kernel_path(kernel.sequence, dtype)
    if not os.path.exists(path):
        from torch._inductor import aoti_compile_and_package
        from torch.export import Dim, export

        os.makedirs(os.path.dirname(path), exist_ok=True)
        voxels = Dim("voxels", min=2)
        example = tuple(torch.ones(1 << 20, dtype=dtype) for _ in range(4)) + tuple(torch.ones((), dtype=dtype) for _ in range(5))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = export(kernel, example, dynamic_shapes=({0: voxels},) * 4 + (None,) * 5)
            partial = f"{path[:-4]}.{os.getpid()}.partial.pt2"
            aoti_compile_and_package(program, package_path=partial)
        os.replace(partial, path)  # atomic: a concurrent process loads a whole package or builds its own
    loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)
    return lambda *tensors: loader.run(list(tensors))


@functools.lru_cache(maxsize=None)
def _cpu_kernel(sequence: str, dtype: torch.dtype) -> Callable:
    """``kernel(t1, t2, pd, out, tr, te, ti, ti2, flip)``: flat maps and result, 0-dim parameters."""
    if hasattr(torch._C, "_aoti") and hasattr(torch._C._aoti, "AOTIModelPackageLoader"):
        return _compile_cpu(_Kernel(sequence), dtype)
    compiled = _fused_kernel(sequence)  # torch < 2.6: no AOTInductor packages; torch.compile as on GPUs

    def kernel(t1, t2, pd, out, *params):
        out.copy_(compiled(t1, t2, pd, *params))

    return kernel


@functools.lru_cache(maxsize=None)
def _fused_kernel(sequence: str) -> Callable:
    """``kernel(t1, t2, pd, tr, te, ti, ti2, flip) -> volume`` through ``torch.compile`` (GPUs)."""
    signal = SIGNALS[sequence]

    def kernel(t1, t2, pd, tr, te, ti, ti2, flip):
        return signal((t1, t2, pd), Protocol(sequence, tr, te, ti, ti2, flip))

    return torch.compile(kernel, dynamic=False)


def _fused(maps: Tuple[torch.Tensor, ...], protocol: Protocol) -> Optional[torch.Tensor]:
    """The volume from the fused kernel, or None where the CPU kernel does not apply (dtypes, one voxel)."""
    t1 = maps[0]
    # parameters the sequence does not take go in as 0 (its signal does not read them)
    params = tuple(torch.as_tensor(0.0 if v is None else v, dtype=t1.dtype, device=t1.device)
                   for v in (protocol.tr, protocol.te, protocol.ti, protocol.ti2, protocol.flip))
    if t1.device.type != "cpu":
        return _fused_kernel(protocol.sequence)(*maps, *params)
    shape = _broadcast_shape(*(m.shape for m in maps))
    if t1.dtype not in _NUMPY_DTYPES or any(m.dtype != t1.dtype for m in maps) or math.prod(shape) < 2:
        return None
    out = _new_volume(shape, t1.dtype)
    flat = (m.expand(shape).reshape(-1).contiguous() for m in maps)  # views, unless broadcast or strided
    _cpu_kernel(protocol.sequence, t1.dtype)(*flat, out.view(-1), *params)
    return out


_fusion_failed = False


def synthesize_volume(
    t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, protocol: Protocol, fused: bool = False
) -> torch.Tensor:
    """The whole weighted volume of ``protocol``, without autograd (see the module notes).

    The result has the broadcast shape of the maps and the dtype of ``t1``, and agrees with
    :func:`synthesize` to float rounding (1e-6 of the maximum in float32) for every sequence, background
    (T = 0: exactly 0) and maps of any strides included.
    """
    global _fusion_failed
    protocol.validate()
    signal = SIGNALS[protocol.sequence]
    with torch.no_grad():
        if fused and not _fusion_failed:
            try:
                out = _fused((t1, t2, pd), protocol)
                if out is not None:
                    return out
            except Exception as error:  # no C++ compiler, no Triton, unsupported platform...
                _fusion_failed = True
                warnings.warn(f"fused kernel unavailable (torch.compile / AOTInductor: {type(error).__name__}: {error}); "
                              "using the default path", RuntimeWarning, stacklevel=2)
        if t1.device.type != "cpu":
            return signal((t1, t2, pd), protocol)
        maps = (t1, t2, pd)
        dtype = t1.dtype
        out = _new_volume(_broadcast_shape(t1.shape, t2.shape, pd.shape), dtype)
        if dtype in _NUMPY_DTYPES and all(m.dtype == dtype and m.device.type == "cpu" for m in maps):
            _chunked(signal, maps, protocol, out)
        else:
            _chunked_reference(signal, maps, protocol, out)
        return out
