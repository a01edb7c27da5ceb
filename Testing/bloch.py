"""A small, independent Bloch simulator used to check the closed-form signal equations.

Written from first principles and deliberately independent of
``SyntheticMRILib.physics.equations`` (nothing from that package is imported here): the
tests compare the library's closed forms against what these pulse-by-pulse
simulations settle to.

Model
-----
* Each element (one tissue under one set of sequence parameters) carries an
  isochromat magnetization ``M = (Mx, My, Mz)``; arrays have shape ``(N, 3)`` and
  every operation is vectorized over the ``N`` elements in numpy (float64).
* Equilibrium magnetization is ``M0 = PD`` along +z. Times in ms, angles in degrees.
* RF pulses are instantaneous rotations about an axis in the transverse plane
  (phase 0 deg = x axis, 90 deg = y axis), right-handed: a 90x pulse turns +z into
  -y. Phase-sensitive (signed) signals are read out against the phase a positive
  Mz takes under the same excitation, so the sign of a signal is the sign of the
  Mz that was excited.
* Free evolution over ``t``: ``Mxy *= exp(-t/T2)``, ``Mz = M0 + (Mz - M0) exp(-t/T1)``,
  plus an optional precession about z by ``off_resonance * t`` (rad/ms, default 0),
  which lets a test see the spin echo refocus.
* Ideal spoiling sets ``Mxy := 0``.
* Every sequence starts from equilibrium and repeats its pulse train (one
  repetition = one TR) until the magnetization at the end of a repetition changes
  by less than ``tol`` (1e-12 by default, absolute, in units of M0 <= 1) from one
  repetition to the next; the echo of that last repetition is returned. A run that
  has not converged within ``max_repetitions`` raises ``RuntimeError`` instead of
  returning an unconverged value.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

__all__ = [
    "rotation",
    "rotate",
    "rf",
    "relax",
    "spoil",
    "steady_state",
    "spin_echo",
    "inversion_recovery",
    "double_inversion_recovery",
    "spoiled_gradient_echo",
]

DEFAULT_TOL = 1e-12
DEFAULT_MAX_REPETITIONS = 200_000


# ---------------------------------------------------------------- elementary operations


def rotation(flip_deg, phase_deg=0.0) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` by ``flip_deg`` about the transverse axis at ``phase_deg``.

    Phase 0 is the x axis, 90 the y axis. Built as ``Rz(phase) Rx(flip) Rz(-phase)``.
    """
    a = np.deg2rad(np.asarray(flip_deg, dtype=np.float64))
    p = np.deg2rad(np.asarray(phase_deg, dtype=np.float64))
    a, p = np.broadcast_arrays(a, p)
    ca, sa, cp, sp = np.cos(a), np.sin(a), np.cos(p), np.sin(p)
    zero, one = np.zeros_like(a), np.ones_like(a)
    rx = np.stack(
        [np.stack([one, zero, zero], -1), np.stack([zero, ca, -sa], -1), np.stack([zero, sa, ca], -1)], -2
    )
    rz = np.stack([np.stack([cp, -sp, zero], -1), np.stack([sp, cp, zero], -1), np.stack([zero, zero, one], -1)], -2)
    rz_inv = np.swapaxes(rz, -1, -2)
    return rz @ rx @ rz_inv


def rotate(m: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Apply rotation matrices ``r`` (``(3, 3)`` or one per element, ``(N, 3, 3)``) to ``m`` ``(N, 3)``."""
    if r.ndim == 2:
        return m @ r.T
    return np.einsum("nij,nj->ni", r, m)


def rf(m: np.ndarray, flip_deg, phase_deg=0.0) -> np.ndarray:
    """Apply an instantaneous RF pulse of ``flip_deg`` about the axis at ``phase_deg``."""
    return rotate(m, rotation(flip_deg, phase_deg))


def relax(m: np.ndarray, t, t1, t2, m0, off_resonance=0.0) -> np.ndarray:
    """Free evolution for ``t`` ms: T1 recovery towards ``m0``, T2 decay, optional precession."""
    t = np.asarray(t, dtype=np.float64)
    if np.any(t < 0):
        raise ValueError("negative evolution interval: the sequence timing is impossible")
    e1 = np.exp(-t / t1)
    e2 = np.exp(-t / t2)
    out = np.empty_like(m)
    phi = np.asarray(off_resonance, dtype=np.float64) * t
    c, s = np.cos(phi), np.sin(phi)
    out[:, 0] = (c * m[:, 0] - s * m[:, 1]) * e2
    out[:, 1] = (s * m[:, 0] + c * m[:, 1]) * e2
    out[:, 2] = m0 + (m[:, 2] - m0) * e1
    return out


def spoil(m: np.ndarray) -> np.ndarray:
    """Ideal spoiling: the transverse magnetization is destroyed."""
    out = m.copy()
    out[:, :2] = 0.0
    return out


# ---------------------------------------------------------------- the repetition loop


def _flatten(*arrays) -> Tuple[Tuple[int, ...], List[np.ndarray]]:
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
    shape = arrays[0].shape
    return shape, [a.reshape(-1).copy() for a in arrays]


def steady_state(repetition, m0: np.ndarray, tol: float = DEFAULT_TOL, max_repetitions: int = DEFAULT_MAX_REPETITIONS):
    """Run ``repetition(m) -> (m_next, echo)`` from equilibrium until steady state.

    ``m`` starts at ``(0, 0, m0)``. Returns ``(m, echo, count)``: the magnetization at
    the end of the last repetition, the echo (whatever ``repetition`` records) of that
    repetition and how many repetitions were run.
    """
    m = np.zeros((m0.size, 3))
    m[:, 2] = m0
    for count in range(1, max_repetitions + 1):
        m_next, echo = repetition(m)
        change = np.max(np.abs(m_next - m)) if m.size else 0.0
        m = m_next
        if change < tol:
            return m, echo, count
    raise RuntimeError(f"no steady state within {max_repetitions} repetitions (last change {change:.3g})")


def _transverse(m: np.ndarray) -> np.ndarray:
    return np.hypot(m[:, 0], m[:, 1])


# ---------------------------------------------------------------- sequences


def spin_echo(t1, t2, pd, tr, te, off_resonance=0.0, phase_sensitive=False, **kw) -> np.ndarray:
    """Spin echo magnitude ``|Mxy|`` at the echo, in steady state.

    Timing of one repetition (t = 0 at the excitation):

    * t = 0: 90 deg pulse about x;
    * t = TE/2: 180 deg refocusing pulse about y;
    * t = TE: echo, the signal is ``|Mxy|`` (with off-resonance the 180 refocuses it);
    * t = TR: ideal spoiling of what is left of Mxy, then the next 90 deg pulse.

    Mz recovers freely between the pulses, so the 180 pulse inverts the Mz regrown
    during the first TE/2: this is the full spin-echo form, valid for any TE < TR.
    ``phase_sensitive=True`` returns the signed component along the excitation phase
    (-y) instead of ``|Mxy|``; it equals the magnitude only if the echo is refocused,
    whatever the off-resonance, which is how the tests check the 180 pulse.
    """
    shape, (t1, t2, pd, tr, te, df) = _flatten(t1, t2, pd, tr, te, off_resonance)
    if np.any(te > tr):
        raise ValueError("TE must not exceed TR")

    def repetition(m):
        m = rf(m, 90.0, 0.0)
        m = relax(m, te / 2, t1, t2, pd, df)
        m = rf(m, 180.0, 90.0)
        m = relax(m, te / 2, t1, t2, pd, df)
        echo = -m[:, 1] if phase_sensitive else _transverse(m)
        m = relax(m, tr - te, t1, t2, pd, df)
        return spoil(m), echo

    _, echo, _ = steady_state(repetition, pd, **kw)
    return echo.reshape(shape)


def _ir_readout(m, t1, t2, pd, te, phase_sensitive):
    """90x excitation, free T2 decay for TE, read the echo: (m after TE, signal)."""
    m = rf(m, 90.0, 0.0)
    m = relax(m, te, t1, t2, pd)
    # a 90x turns +Mz into -My: the signed signal is -My (the phase of an excited positive Mz)
    signal = -m[:, 1] if phase_sensitive else _transverse(m)
    return m, signal


def inversion_recovery(t1, t2, pd, tr, te, ti, phase_sensitive=False, **kw) -> np.ndarray:
    """Inversion recovery with an ideal spin-echo readout, in steady state.

    Timing of one repetition (t = 0 at the inversion):

    * t = 0: 180 deg inversion pulse about x;
    * t = TI: 90 deg excitation about x, which leaves Mz = 0;
    * t = TI + TE: the echo. No refocusing pulse is simulated: the echo amplitude is
      the transverse magnetization excited at TI decayed by ``exp(-TE/T2)`` (an ideal
      spin echo), and Mz regrows freely from 0 after the excitation. This is the
      TE << TR form the closed equation assumes;
    * t = TR: ideal spoiling, then the next inversion.

    ``phase_sensitive=True`` returns the signed signal (the sign of the Mz just before
    the excitation), otherwise its magnitude.
    """
    shape, (t1, t2, pd, tr, te, ti) = _flatten(t1, t2, pd, tr, te, ti)
    if np.any(ti + te > tr):
        raise ValueError("TI + TE must not exceed TR")

    def repetition(m):
        m = rf(m, 180.0, 0.0)
        m = relax(m, ti, t1, t2, pd)
        m, echo = _ir_readout(m, t1, t2, pd, te, phase_sensitive)
        m = relax(m, tr - ti - te, t1, t2, pd)
        return spoil(m), echo

    _, echo, _ = steady_state(repetition, pd, **kw)
    return echo.reshape(shape)


def double_inversion_recovery(t1, t2, pd, tr, te, ti1, ti2, phase_sensitive=False, **kw) -> np.ndarray:
    """Double inversion recovery, in steady state.

    Timing of one repetition (t = 0 at the first inversion; TI1 > TI2, both are
    measured back from the excitation):

    * t = 0: first 180 deg inversion;
    * t = TI1 - TI2: second 180 deg inversion;
    * t = TI1: 90 deg excitation, readout as in :func:`inversion_recovery`
      (echo at TI1 + TE, Mz = 0 after the excitation);
    * t = TR: ideal spoiling, then the next first inversion.
    """
    shape, (t1, t2, pd, tr, te, ti1, ti2) = _flatten(t1, t2, pd, tr, te, ti1, ti2)
    if np.any(ti2 > ti1) or np.any(ti2 < 0) or np.any(ti1 + te > tr):
        raise ValueError("need 0 <= TI2 <= TI1 and TI1 + TE <= TR")

    def repetition(m):
        m = rf(m, 180.0, 0.0)
        m = relax(m, ti1 - ti2, t1, t2, pd)
        m = rf(m, 180.0, 0.0)
        m = relax(m, ti2, t1, t2, pd)
        m, echo = _ir_readout(m, t1, t2, pd, te, phase_sensitive)
        m = relax(m, tr - ti1 - te, t1, t2, pd)
        return spoil(m), echo

    _, echo, _ = steady_state(repetition, pd, **kw)
    return echo.reshape(shape)


def spoiled_gradient_echo(t1, t2, pd, tr, te, flip, **kw) -> np.ndarray:
    """Spoiled gradient echo (FLASH/SPGR), in steady state.

    Timing of one repetition (t = 0 at the excitation):

    * t = 0: pulse of ``flip`` degrees about x;
    * t = TE: the echo, ``|Mxy|`` = the transverse component right after the pulse
      decayed by ``exp(-TE/T2)`` (T2 stands in for T2*; no refocusing);
    * t = TR: ideal spoiling, then the next pulse. Mz recovers over the whole TR.

    With a long T1, a short TR and a small flip the approach to steady state is slow
    (the per-repetition factor is ``cos(flip) exp(-TR/T1)``), hence the vectorized loop.
    """
    shape, (t1, t2, pd, tr, te, flip) = _flatten(t1, t2, pd, tr, te, flip)
    if np.any(te > tr):
        raise ValueError("TE must not exceed TR")

    pulse = rotation(flip, 0.0)  # (N, 3, 3), built once

    def repetition(m):
        m = rotate(m, pulse)
        m = relax(m, te, t1, t2, pd)
        echo = _transverse(m)
        m = relax(m, tr - te, t1, t2, pd)
        return spoil(m), echo

    _, echo, _ = steady_state(repetition, pd, **kw)
    return echo.reshape(shape)
