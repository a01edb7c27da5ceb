"""Independent tests of the physics layer (SyntheticMRILib.physics.equations) and of the synthesis paths.

The closed-form signal equations are checked against a pulse-by-pulse Bloch
simulation written separately (``Testing/bloch.py``), then for differentiability,
background handling, null points, limits, broadcasting and purity.
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # works under any pytest import mode
    sys.path.insert(0, _HERE)

import bloch  # noqa: E402  (the independent simulator next to this file)

from SyntheticMRILib.physics import equations as physics  # noqa: E402
from SyntheticMRILib.physics import nulls  # noqa: E402

from SyntheticMRILib.physics import synthesis  # noqa: E402
from SyntheticMRILib.physics.protocols import PRESETS, SEQUENCES, Protocol  # noqa: E402
from SyntheticMRILib.physics.tissues import relaxation  # noqa: E402

F64 = torch.float64

# ------------------------------------------------------------------ tissue grid for the Bloch comparison

GRID_T1 = (250.0, 380.0, 600.0, 850.0, 1350.0, 2000.0, 3000.0, 4500.0)
GRID_T2 = (10.0, 45.0, 100.0, 300.0, 2000.0)
GRID_PD = (0.05, 0.4, 1.0)
BLOCH_RTOL = 1e-3


def _grid():
    t1, t2, pd = np.meshgrid(GRID_T1, GRID_T2, GRID_PD, indexing="ij")
    # (1, N): the N tissues along a row; parameter sets come as (P, 1) columns and broadcast to (P, N)
    return t1.reshape(1, -1), t2.reshape(1, -1), pd.reshape(1, -1)


def _exact_null(t1, tr):
    """TI nulling T1 at TR, solved here by hand: 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0."""
    return t1 * math.log(2.0 / (1.0 + math.exp(-tr / t1)))


def _bloch_error(library, simulated, pd, t2, te):
    """Largest relative error of the closed form against the simulation.

    The denominator has an absolute floor of 1e-3 * PD * exp(-TE/T2), i.e. 1e-3 of the
    longitudinal factor. At (or next to) a null point the signal is a cancellation of
    O(1) terms: the closed form carries ~1e-16 of rounding there and the simulation
    ~1e-12 of residual from its convergence test, so a plain relative error would
    measure how deep the null is, not whether the two agree. The floor includes
    exp(-TE/T2) so that strongly T2-decayed tissues (T2 10 ms at TE 100 ms gives
    ~5e-5 PD) are still compared relatively rather than passing trivially. (The same
    floor covers the GRE points at 170 deg with a long T1, whose signal is ~1e-3 PD:
    there the simulation's slow convergence, not the closed form, sets the error.)
    """
    floor = 1e-3 * pd * np.exp(-te / t2)
    err = np.abs(library - simulated) / np.maximum(np.abs(simulated), floor)
    return float(err.max())


def _columns(params):
    arr = np.asarray(params, dtype=np.float64)
    return [arr[:, i : i + 1] for i in range(arr.shape[1])]  # each (P, 1)


def _lib(fn, t1, t2, pd, cols, **kw):
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (t1, t2, pd)]
    out = fn(*tensors, *[torch.from_numpy(c) for c in cols], **kw)
    return out.detach().numpy()


SE_PARAMS = [(500, 10), (4500, 100), (4000, 10), (2500, 30), (800, 200), (300, 250), (100, 90), (3000, 1)]
IR_PARAMS = [
    (9000, 90, 2500),
    (2500, 10, 900),
    (5000, 60, 260),
    (5000, 10, 400),
    (2000, 20, 1500),
    (600, 10, 100),
    (12000, 120, 6000),
    # TI exactly at the null of grid tissues: the absolute floor is needed here
    (5000, 10, _exact_null(850.0, 5000)),
    (9000, 90, _exact_null(4500.0, 9000)),
    (2500, 10, _exact_null(250.0, 2500)),
]
DIR_PARAMS = [
    (7500, 25, 3000, 400),
    (5000, 10, 2000, 500),
    (3000, 20, 1200, 300),
    (10000, 30, 3500, 500),
    (1500, 10, 1000, 100),
    (6000, 10, 2500, 2400),
    (7500, 25) + nulls.double_ir_null_tis(4500.0, 850.0, 7500.0),
]
GRE_PARAMS = [
    (20, 4, 25),
    (3, 1.5, 2),  # long T1, short TR, small flip: ~20 000 repetitions to converge
    (5, 2, 5),
    (10, 3, 90),
    (100, 10, 30),
    (1000, 10, 150),
    (8, 4, 60),
    (50, 5, 170),
]


def test_spin_echo_matches_bloch():
    t1, t2, pd = _grid()
    tr, te = _columns(SE_PARAMS)
    ref = bloch.spin_echo(t1, t2, pd, tr, te)
    err = _bloch_error(_lib(physics.spin_echo, t1, t2, pd, [tr, te]), ref, pd, t2, te)
    print(f"spin echo: max relative error vs Bloch {err:.3g}")
    assert err <= BLOCH_RTOL


@pytest.mark.parametrize("phase_sensitive", [False, True])
def test_inversion_recovery_matches_bloch(phase_sensitive):
    t1, t2, pd = _grid()
    tr, te, ti = _columns(IR_PARAMS)
    ref = bloch.inversion_recovery(t1, t2, pd, tr, te, ti, phase_sensitive=phase_sensitive)
    lib = _lib(physics.inversion_recovery, t1, t2, pd, [tr, te, ti], phase_sensitive=phase_sensitive)
    err = _bloch_error(lib, ref, pd, t2, te)
    print(f"inversion recovery (phase_sensitive={phase_sensitive}): max relative error vs Bloch {err:.3g}")
    assert err <= BLOCH_RTOL
    if phase_sensitive:  # the grid really has both signs, so the sign is being checked
        assert (ref < -1e-3).any() and (ref > 1e-3).any()


def test_double_inversion_recovery_matches_bloch():
    t1, t2, pd = _grid()
    tr, te, ti1, ti2 = _columns(DIR_PARAMS)
    ref = bloch.double_inversion_recovery(t1, t2, pd, tr, te, ti1, ti2)
    err = _bloch_error(_lib(physics.double_inversion_recovery, t1, t2, pd, [tr, te, ti1, ti2]), ref, pd, t2, te)
    print(f"double inversion recovery: max relative error vs Bloch {err:.3g}")
    assert err <= BLOCH_RTOL


def test_spoiled_gradient_echo_matches_bloch():
    t1, t2, pd = _grid()
    tr, te, flip = _columns(GRE_PARAMS)
    ref = bloch.spoiled_gradient_echo(t1, t2, pd, tr, te, flip)
    err = _bloch_error(_lib(physics.spoiled_gradient_echo, t1, t2, pd, [tr, te, flip]), ref, pd, t2, te)
    print(f"spoiled gradient echo: max relative error vs Bloch {err:.3g}")
    assert err <= BLOCH_RTOL


# ------------------------------------------------------------------ the simulator checks itself


def test_bloch_simulator_sanity():
    z = np.array([[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(bloch.rf(z, 90.0, 0.0), [[0.0, -1.0, 0.0]], atol=1e-15)  # 90x: +z -> -y
    np.testing.assert_allclose(bloch.rf(z, 180.0, 90.0), [[0.0, 0.0, -1.0]], atol=1e-15)  # 180y inverts
    np.testing.assert_allclose(bloch.rf(np.array([[1.0, 0.0, 0.0]]), 180.0, 90.0), [[-1.0, 0.0, 0.0]], atol=1e-15)
    r = bloch.rotation(np.array([13.0, 77.0, 180.0]), np.array([0.0, 45.0, 90.0]))
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-14)
    m = np.array([[0.3, -0.4, -0.5]])
    out = bloch.relax(m, 100.0, 1000.0, 50.0, 0.8)
    np.testing.assert_allclose(out[0, :2], m[0, :2] * math.exp(-2.0), rtol=1e-14)
    np.testing.assert_allclose(out[0, 2], 0.8 + (-0.5 - 0.8) * math.exp(-0.1), rtol=1e-14)
    assert np.array_equal(bloch.spoil(m)[0], [0.0, 0.0, -0.5])
    with pytest.raises(RuntimeError):  # an unconverged run is an error, never a value
        bloch.spoiled_gradient_echo(4500.0, 100.0, 1.0, 3.0, 1.0, 2.0, max_repetitions=10)


def test_bloch_spin_echo_refocuses_off_resonance():
    """The simulated 180y pulse really refocuses: the signed echo does not depend on off-resonance."""
    t1, t2, pd = _grid()
    on = bloch.spin_echo(t1, t2, pd, 1000.0, 80.0)
    for df in (0.01, 0.37, 2.5):  # rad/ms
        signed = bloch.spin_echo(t1, t2, pd, 1000.0, 80.0, off_resonance=df, phase_sensitive=True)
        np.testing.assert_allclose(signed, on, rtol=1e-9, atol=1e-15)


# ------------------------------------------------------------------ gradients


def _gc_maps():
    t1 = torch.tensor([700.0, 1300.0, 4000.0], dtype=F64, requires_grad=True)
    t2 = torch.tensor([60.0, 95.0, 1800.0], dtype=F64, requires_grad=True)
    pd = torch.tensor([0.7, 0.8, 1.0], dtype=F64, requires_grad=True)
    return t1, t2, pd


def _p(*values):
    """A parameter of shape (2, 1): it broadcasts against the (3,) maps, so gradcheck also covers the reduction."""
    return torch.tensor(values, dtype=F64).reshape(-1, 1).requires_grad_(True)


# Each entry: function, parameters (chosen away from the nulls so |.| is differentiable), keyword arguments.
GRADCHECK_CASES = {
    "spin_echo": (physics.spin_echo, lambda: (_p(500.0, 4000.0), _p(10.0, 100.0)), {}),
    "inversion_recovery": (
        physics.inversion_recovery,
        lambda: (_p(5000.0, 6000.0), _p(10.0, 60.0), _p(300.0, 2200.0)),
        {},
    ),
    "inversion_recovery_psir": (
        physics.inversion_recovery,
        lambda: (_p(5000.0, 6000.0), _p(10.0, 60.0), _p(300.0, 2200.0)),
        {"phase_sensitive": True},
    ),
    "double_inversion_recovery": (
        physics.double_inversion_recovery,
        lambda: (_p(7500.0, 6000.0), _p(25.0, 15.0), _p(3000.0, 2500.0), _p(400.0, 700.0)),
        {},
    ),
    "spoiled_gradient_echo": (
        physics.spoiled_gradient_echo,
        lambda: (_p(20.0, 8.0), _p(4.0, 3.0), _p(25.0, 70.0)),
        {},
    ),
    "divided_subtracted_ir": (
        physics.divided_subtracted_ir,
        lambda: (_p(5000.0, 6000.0), _p(10.0, 30.0), _p(1500.0, 1000.0), _p(500.0, 700.0)),
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck_every_parameter(name):
    fn, make_params, kw = GRADCHECK_CASES[name]
    inputs = _gc_maps() + make_params()
    with torch.no_grad():  # the test points stay away from nulls, where |S| is not differentiable
        if fn is physics.divided_subtracted_ir:
            tr, te, ti_long, ti_short = inputs[3:]
            for ti in (ti_long, ti_short):
                assert physics.inversion_recovery(*inputs[:3], tr, te, ti).min() > 1e-3
        else:
            assert fn(*inputs, **kw).abs().min() > 1e-3
    assert torch.autograd.gradcheck(lambda *a: fn(*a, **kw), inputs, eps=1e-6, atol=1e-8, rtol=1e-5)


SEQUENCE_PARAMS = {
    "se": dict(tr=_p(500.0, 4000.0), te=_p(10.0, 100.0)),
    "ir": dict(tr=_p(5000.0, 6000.0), te=_p(10.0, 60.0), ti=_p(300.0, 2200.0)),
    "psir": dict(tr=_p(5000.0, 6000.0), te=_p(10.0, 60.0), ti=_p(300.0, 2200.0)),
    "dir": dict(tr=_p(7500.0, 6000.0), te=_p(25.0, 15.0), ti=_p(3000.0, 2500.0), ti2=_p(400.0, 700.0)),
    "gre": dict(tr=_p(20.0, 8.0), te=_p(4.0, 3.0), flip=_p(25.0, 70.0)),
    "dsir": dict(tr=_p(5000.0, 6000.0), te=_p(10.0, 30.0), ti=_p(1500.0, 1000.0), ti2=_p(500.0, 700.0)),
}


def test_sequence_params_cover_every_sequence():
    assert set(SEQUENCE_PARAMS) == set(SEQUENCES)


@pytest.mark.parametrize("sequence", sorted(SEQUENCE_PARAMS))
def test_gradcheck_through_synthesize(sequence):
    names = sorted(SEQUENCE_PARAMS[sequence])
    values = [SEQUENCE_PARAMS[sequence][n].detach().clone().requires_grad_(True) for n in names]

    def run(t1, t2, pd, *params):
        protocol = Protocol(sequence, **dict(zip(names, params)))
        return synthesis.synthesize(t1, t2, pd, protocol)

    assert torch.autograd.gradcheck(run, _gc_maps() + tuple(values), eps=1e-6, atol=1e-8, rtol=1e-5)


# ------------------------------------------------------------------ background voxels

# (function, keyword parameters) for every signal function; values are valid protocols.
FUNCTIONS = {
    "spin_echo": (physics.spin_echo, dict(tr=2500.0, te=30.0)),
    "inversion_recovery": (physics.inversion_recovery, dict(tr=5000.0, te=20.0, ti=900.0)),
    "inversion_recovery_psir": (
        lambda *a, **k: physics.inversion_recovery(*a, phase_sensitive=True, **k),
        dict(tr=5000.0, te=20.0, ti=900.0),
    ),
    "double_inversion_recovery": (physics.double_inversion_recovery, dict(tr=7500.0, te=25.0, ti1=3000.0, ti2=500.0)),
    "spoiled_gradient_echo": (physics.spoiled_gradient_echo, dict(tr=15.0, te=4.0, flip=20.0)),
    "divided_subtracted_ir": (physics.divided_subtracted_ir, dict(tr=5000.0, te=10.0, ti_long=900.0, ti_short=590.0)),
}


def _background_maps(dtype=F64):
    """A (2, 3) map pair: column 0 and the whole second row are background (T1 = T2 = PD = 0)."""
    t1 = torch.tensor([[0.0, 850.0, 4000.0], [0.0, 0.0, 0.0]], dtype=dtype)
    t2 = torch.tensor([[0.0, 75.0, 2000.0], [0.0, 0.0, 0.0]], dtype=dtype)
    pd = torch.tensor([[0.0, 0.69, 1.0], [0.0, 0.0, 0.0]], dtype=dtype)
    return t1, t2, pd


def _check_background(out, maps, params):
    background = maps[2].detach() == 0
    assert torch.equal(out.detach()[..., background], torch.zeros_like(out.detach()[..., background]))
    assert (out.detach()[..., ~background] != 0).all()
    out.sum().backward()
    for tensor in tuple(maps) + tuple(params):
        assert tensor.grad is not None
        assert torch.isfinite(tensor.grad).all(), "NaN/inf gradient from background voxels"


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_background_is_exactly_zero_with_finite_gradients(name, dtype):
    fn, kw = FUNCTIONS[name]
    maps = tuple(m.requires_grad_(True) for m in _background_maps(dtype))
    params = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in kw.items()}
    out = fn(*maps, **params)
    assert out.dtype == dtype
    _check_background(out, maps, tuple(params.values()))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_background_zero_for_every_preset(name):
    protocol = PRESETS[name].protocol
    # float parameters (the validated path)
    maps = tuple(m.requires_grad_(True) for m in _background_maps())
    _check_background(synthesis.synthesize(*maps, protocol), maps, ())
    # the same protocol with learnable tensor parameters
    maps = tuple(m.requires_grad_(True) for m in _background_maps())
    fields = {
        f: torch.tensor(float(getattr(protocol, f)), dtype=F64, requires_grad=True)
        for f in ("tr", "te", "ti", "ti2", "flip")
        if getattr(protocol, f) is not None
    }
    _check_background(synthesis.synthesize(*maps, dataclasses.replace(protocol, **fields)), maps, tuple(fields.values()))
    # and the no-grad volume path
    plain = _background_maps()
    out = synthesis.synthesize_volume(*plain, protocol)
    assert torch.equal(out[plain[2] == 0], torch.zeros(int((plain[2] == 0).sum()), dtype=F64))


# ------------------------------------------------------------------ null points


def _tissue(*names, dtype=F64):
    rows = [relaxation(n) for n in names]
    return tuple(torch.tensor([getattr(r, a) for r in rows], dtype=dtype) for a in ("t1", "t2", "pd"))


@pytest.mark.parametrize("tr", [2500.0, 5000.0, 9000.0, 11000.0])
def test_flair_at_null_ti_nulls_csf(tr):
    ti = nulls.null_ti(relaxation("csf").t1, tr)
    assert abs(float(ti) - _exact_null(relaxation("csf").t1, tr)) < 1e-9
    csf, wm = physics.inversion_recovery(*_tissue("csf", "cerebral_wm"), tr, 90.0, ti)
    assert wm > 0.05
    assert csf / wm < 1e-6


@pytest.mark.parametrize(
    "a, b, tr",
    [("csf", "cerebral_wm", 7500.0), ("csf", "cerebral_wm", 3000.0), ("csf", "cortex", 7500.0), ("cortex", "cerebral_wm", 5000.0), ("csf", "fat", 5000.0)],
)
def test_double_ir_null_tis_null_both(a, b, tr):
    ti1, ti2 = nulls.double_ir_null_tis(relaxation(a).t1, relaxation(b).t1, tr)
    assert 0 < ti2 < ti1 < tr
    others = [n for n in ("cortex", "cerebral_wm", "fat", "csf", "thalamus") if n not in (a, b)]
    s_a, s_b = physics.double_inversion_recovery(*_tissue(a, b), tr, 20.0, ti1, ti2)
    shown = physics.double_inversion_recovery(*_tissue(*others), tr, 20.0, ti1, ti2)
    assert float(shown.max()) > 0.01
    assert float(s_a) < 1e-6 * float(shown.max()) and float(s_b) < 1e-6 * float(shown.max())


def test_double_ir_null_tis_rejects_impossible_pair():
    with pytest.raises(ValueError):
        nulls.double_ir_null_tis(0.0, 850.0, 5000.0)  # no tissue: nothing to null


def test_double_ir_null_tis_equal_t1_raises_value_error():
    with pytest.raises(ValueError):
        nulls.double_ir_null_tis(850.0, 850.0, 5000.0)  # one tissue twice: no unique pair


# preset -> (nulled tissues, tissues it is meant to show)
NULLING_PRESETS = {
    "T2-FLAIR": (("csf",), ("cerebral_wm", "cortex")),
    "T1-FLAIR": (("csf",), ("cerebral_wm", "cortex")),
    "STIR": (("fat",), ("cerebral_wm", "cortex", "csf")),
    "DIR": (("csf", "cerebral_wm"), ("cortex",)),
    "WM-nulled": (("cerebral_wm",), ("cortex", "thalamus", "csf")),
    "GM-nulled": (("cortex",), ("cerebral_wm", "csf")),
}


@pytest.mark.parametrize("name", sorted(NULLING_PRESETS))
def test_presets_null_what_they_claim(name):
    nulled, shown = NULLING_PRESETS[name]
    p = PRESETS[name].protocol
    tis = [p.ti] if p.ti2 is None else [p.ti, p.ti2]
    # the preset TIs are the exact nulls rounded to the ms
    if p.sequence == "ir":
        exact = [_exact_null(relaxation(nulled[0]).t1, p.tr)]
    else:
        exact = list(nulls.double_ir_null_tis(relaxation(nulled[0]).t1, relaxation(nulled[1]).t1, p.tr))
    assert all(abs(t - e) <= 0.5 for t, e in zip(tis, exact))
    signal_nulled = synthesis.synthesize(*_tissue(*nulled), p)
    signal_shown = synthesis.synthesize(*_tissue(*shown), p)
    for tissue, s in zip(nulled, signal_nulled):
        r = relaxation(tissue)
        # what is left is only the rounding of TI to 0.5 ms: first-order bound, dMz/dTI = 2 exp(-TI/T1) / T1
        slack = 1.01 * 0.5 * sum(2 * math.exp(-t / r.t1) / r.t1 for t in tis)
        assert abs(float(s)) <= r.pd * math.exp(-p.te / r.t2) * slack
        assert abs(float(s)) < 1e-2 * float(signal_shown.abs().min())
    # and at the exact (unrounded) TIs the null is exact
    exact_protocol = dataclasses.replace(p, ti=exact[0], ti2=None if p.ti2 is None else exact[1])
    exact_nulled = synthesis.synthesize(*_tissue(*nulled), exact_protocol)
    assert float(exact_nulled.abs().max()) < 1e-9 * float(signal_shown.abs().min())


def test_dsir_preset_spans_wm_to_gm():
    values = synthesis.synthesize(*_tissue("cerebral_wm", "cortex"), PRESETS["dSIR"].protocol)
    assert abs(float(values[0]) + 1) < 5e-3 and abs(float(values[1]) - 1) < 5e-3


# ------------------------------------------------------------------ limits and dSIR properties


def test_short_spin_echo_is_the_te_much_less_than_tr_limit():
    t1, t2, pd = (torch.from_numpy(a.ravel().copy()) for a in _grid())
    for tr in (500.0, 2500.0, 6000.0):
        diffs = []
        for ratio in (0.3, 0.1, 0.03, 0.01, 0.001, 0.0):
            te = ratio * tr
            short = pd * (1 - torch.exp(-tr / t1)) * torch.exp(-te / t2)  # the textbook short form, inline
            full = physics.spin_echo(t1, t2, pd, tr, te)
            assert (full <= short * (1 + 1e-12)).all()  # the refocusing pulse only costs signal
            diffs.append(float(((short - full) / short).max()))
        assert all(a > b for a, b in zip(diffs[:-2], diffs[1:-1])), diffs  # shrinks as TE/TR -> 0
        assert diffs[-1] < 1e-12  # TE = 0: identical
        assert diffs[-2] < 0.01 * diffs[1]  # first order: 100x smaller TE/TR, ~100x smaller difference


def _dsir_setup():
    tr, te = 5000.0, 10.0
    t1_short, t1_long = 800.0, 1400.0  # the tissues TI_short and TI_long null
    return tr, te, _exact_null(t1_long, tr), _exact_null(t1_short, tr), t1_short, t1_long


def test_dsir_is_minus_one_and_plus_one_at_the_nulled_tissues():
    tr, te, ti_long, ti_short, t1_short, t1_long = _dsir_setup()
    t1 = torch.tensor([t1_short, t1_long], dtype=F64)
    out = physics.divided_subtracted_ir(t1, torch.tensor([80.0, 90.0], dtype=F64), torch.tensor([0.7, 0.8], dtype=F64), tr, te, ti_long, ti_short)
    torch.testing.assert_close(out, torch.tensor([-1.0, 1.0], dtype=F64), rtol=0, atol=1e-10)


def test_dsir_monotonic_between_and_independent_of_pd_t2():
    tr, te, ti_long, ti_short, t1_short, t1_long = _dsir_setup()
    t1 = torch.linspace(t1_short, t1_long, 501, dtype=F64)
    base = physics.divided_subtracted_ir(t1, torch.full_like(t1, 90.0), torch.full_like(t1, 0.8), tr, te, ti_long, ti_short)
    assert (base.diff() > 0).all()
    assert float(base.min()) >= -1 - 1e-12 and float(base.max()) <= 1 + 1e-12
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        t2 = 20 + 2000 * torch.rand(t1.shape, generator=gen, dtype=F64)
        pd = 0.05 + 0.95 * torch.rand(t1.shape, generator=gen, dtype=F64)
        other = physics.divided_subtracted_ir(t1, t2, pd, tr, te, ti_long, ti_short)
        torch.testing.assert_close(other, base, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ batching and broadcasting


def _random_maps(shape, dtype, seed=0, background=0.1, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    t1 = 250 + 4250 * torch.rand(shape, generator=gen, dtype=F64)
    t2 = 10 + 0.4 * t1 * torch.rand(shape, generator=gen, dtype=F64)
    pd = 0.05 + 0.95 * torch.rand(shape, generator=gen, dtype=F64)
    empty = torch.rand(shape, generator=gen) < background
    maps = [torch.where(empty, torch.zeros_like(m), m) for m in (t1, t2, pd)]
    return tuple(m.to(dtype=dtype, device=device) for m in maps)


BATCH_VALUES = {  # K = 3 values per parameter, all valid for each function's defaults in FUNCTIONS
    "tr": [3000.0, 5000.0, 9000.0],
    "te": [5.0, 10.0, 15.0],
    "ti": [300.0, 900.0, 2000.0],
    "ti1": [2900.0, 3000.0, 3200.0],
    "ti2": [100.0, 400.0, 550.0],
    "flip": [5.0, 20.0, 90.0],
    "ti_long": [800.0, 900.0, 1500.0],
    "ti_short": [300.0, 590.0, 700.0],
}


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_batched_parameters_equal_separate_calls(name, dtype, device="cpu"):
    fn, kw = FUNCTIONS[name]
    maps = _random_maps((3, 4, 5), dtype, device=device)
    # a Python-float parameter and a tensor one take slightly different float32 kernels
    # (x / t versus t.reciprocal() * x): a few ulp, amplified by dSIR's division near its zero crossing
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    for param in kw:
        values = BATCH_VALUES[param] if not (name == "spoiled_gradient_echo" and param == "tr") else [15.0, 20.0, 40.0]
        batched = torch.tensor(values, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
        out = fn(*maps, **dict(kw, **{param: batched}))
        assert out.shape == (len(values), 3, 4, 5) and out.dtype == dtype and out.device.type == device
        for k, v in enumerate(values):
            single = fn(*maps, **dict(kw, **{param: v}))
            torch.testing.assert_close(out[k], single, **tol)
    # every parameter batched at once (same values twice): each slice is the unbatched call
    batched_all = {p: torch.tensor([kw[p]] * 2, dtype=dtype, device=device).reshape(2, 1, 1, 1) for p in kw}
    out = fn(*maps, **batched_all)
    torch.testing.assert_close(out, fn(*maps, **kw).expand(2, 3, 4, 5), **tol)


@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_synthesize_batches_a_parameter(sequence):
    base = {n: float(v.detach()[0, 0]) for n, v in SEQUENCE_PARAMS[sequence].items()}
    maps = _random_maps((2, 3, 4), F64)
    tr_values = [base["tr"], base["tr"] * 1.5]
    batched = Protocol(sequence, **dict(base, tr=torch.tensor(tr_values, dtype=F64).reshape(-1, 1, 1, 1)))
    out = synthesis.synthesize(*maps, batched)
    for k, tr in enumerate(tr_values):
        torch.testing.assert_close(out[k], synthesis.synthesize(*maps, Protocol(sequence, **dict(base, tr=tr))), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_cuda_matches_cpu(name):
    fn, kw = FUNCTIONS[name]
    test_batched_parameters_equal_separate_calls(name, torch.float32, device="cuda")
    cpu_maps = _random_maps((3, 4, 5), F64)
    gpu_maps = tuple(m.cuda() for m in cpu_maps)
    gpu_params = {k: torch.tensor(v, dtype=F64, device="cuda") for k, v in kw.items()}
    torch.testing.assert_close(fn(*gpu_maps, **gpu_params).cpu(), fn(*cpu_maps, **kw), rtol=1e-10, atol=1e-12)
    for preset_name, p in PRESETS.items():
        out = synthesis.synthesize_volume(*gpu_maps, p.protocol)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), synthesis.synthesize(*cpu_maps, p.protocol), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ the volume paths


@pytest.fixture
def fresh_fusion(monkeypatch):
    """Empty in-process kernel caches and no recorded failure, before and after the test."""
    synthesis._fused_kernel.cache_clear()
    synthesis._cpu_kernel.cache_clear()
    monkeypatch.setattr(synthesis, "_fusion_failed", False)
    yield monkeypatch
    synthesis._fused_kernel.cache_clear()
    synthesis._cpu_kernel.cache_clear()


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 1000 voxels after a first one of 300: a small volume then spans many chunks of two lengths
    and ends in a partial one."""
    monkeypatch.setattr(synthesis, "_CHUNK", 1000)
    monkeypatch.setattr(synthesis, "_FIRST_CHUNK", 300)
    return 1000


def _assert_matches(out, ref, rtol=1e-5):
    """1e-5 relative, with an absolute floor of 1e-5 of the image maximum (nulls and background are ~0)."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


def _assert_background_zero(out, maps):
    background = maps[0] == 0
    assert background.any() and torch.equal(out[background], torch.zeros_like(out[background]))
    assert not out.isnan().any()


@pytest.fixture(scope="module")
def volume():
    # 37 x 41 x 29 = 43 993 voxels: with small_chunks 44 chunks, the last one of 993
    return _random_maps((37, 41, 29), torch.float32, seed=3)


def _protocols(sequence):
    """Two valid float protocols of ``sequence``: the two columns of SEQUENCE_PARAMS."""
    params = SEQUENCE_PARAMS[sequence]
    return [Protocol(sequence, **{n: float(v.detach().reshape(-1)[k]) for n, v in params.items()}).validate() for k in (0, 1)]


def _assert_same(out, ref):
    """The default path runs the torch operations of the differentiable one, with the same roundings, and
    exp2 always through torch's vector kernel: the same numbers, to the last bit."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert torch.equal(out, ref), f"{int((out != ref).sum())} voxels differ, by up to {float((out - ref).abs().max())}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_synthesize_volume_default_matches_synthesize(name, volume, small_chunks):
    protocol = PRESETS[name].protocol
    out = synthesis.synthesize_volume(*volume, protocol, fused=False)
    _assert_same(out, synthesis.synthesize(*volume, protocol))
    _assert_background_zero(out, volume)
    small = tuple(m[:5, :6, :7].double() for m in volume)
    _assert_same(synthesis.synthesize_volume(*small, protocol), synthesis.synthesize(*small, protocol))


@pytest.mark.filterwarnings("error:An output with one or more elements was resized")
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_default_path_every_sequence_odd_sizes_and_chunks(sequence, dtype, monkeypatch):
    """Every sequence, two protocols each, volumes whose size is not a multiple of the chunk (a short first
    chunk, then chunks sized to the cache, then a partial one; and volumes smaller than a chunk, one of a
    single voxel), against the differentiable path; background exactly 0."""
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for chunk, shape in ((1000, (13, 17, 19)), (4096, (13, 17, 19)), (1 << 19, (7, 5, 3)), (1000, (1, 1, 1))):
        monkeypatch.setattr(synthesis, "_CHUNK", chunk)
        monkeypatch.setattr(synthesis, "_FIRST_CHUNK", chunk // 3)
        maps = _random_maps(shape, dtype, seed=chunk)
        if shape == (1, 1, 1):
            maps = tuple(torch.zeros_like(m) for m in maps)  # a lone background voxel
        for protocol in _protocols(sequence):
            out = synthesis.synthesize_volume(*maps, protocol)
            ref = synthesis.synthesize(*maps, protocol)
            assert out.shape == ref.shape and out.dtype == dtype
            if shape == (1, 1, 1):
                assert torch.equal(out, torch.zeros_like(out))
            else:
                _assert_matches(out, ref, rtol=rtol)
                _assert_same(out, ref)
                _assert_background_zero(out, maps)


@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_default_path_non_contiguous_and_broadcast_maps(sequence, volume, small_chunks):
    """Transposed and sliced maps (strided views) and a PD broadcast from fewer dimensions."""
    protocol = _protocols(sequence)[1]
    strided = tuple(m.permute(2, 0, 1)[:, ::2] for m in volume)
    assert not strided[0].is_contiguous()
    out = synthesis.synthesize_volume(*strided, protocol)
    _assert_same(out, synthesis.synthesize(*strided, protocol))
    _assert_background_zero(out, strided)
    t1, t2 = volume[0][0], volume[1][0]
    pd = torch.full((t1.shape[1],), 0.8)  # one value per column, broadcast over the rows
    out = synthesis.synthesize_volume(t1, t2, pd, protocol)
    _assert_same(out, synthesis.synthesize(t1, t2, pd, protocol))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_default_path_is_the_same_whatever_the_partition(threads, monkeypatch):
    """A voxel gets the same value whether it is synthesized in the whole volume, in a gathered band of a
    few voxels (the Slicer preview), in chunks of any size, or with any number of threads: torch.exp2's
    scalar tail, which rounds differently, is never used (equations.vector_length)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        maps = _random_maps((29, 31, 37), torch.float32, seed=threads)
        band = torch.arange(5, maps[0].numel(), 97)  # 343 voxels spread over the volume
        for name in ("DIR", "T2-FLAIR", "dSIR", "T1w-GRE"):
            protocol = PRESETS[name].protocol
            whole = synthesis.synthesize_volume(*maps, protocol).reshape(-1)
            gathered = synthesis.synthesize_volume(*(m.reshape(-1)[band] for m in maps), protocol)
            assert torch.equal(gathered, whole[band]), name
            for chunk, first in ((1000, 300), (4096, 4096), (1 << 19, 1 << 16)):
                monkeypatch.setattr(synthesis, "_CHUNK", chunk)
                monkeypatch.setattr(synthesis, "_FIRST_CHUNK", first)
                assert torch.equal(synthesis.synthesize_volume(*maps, protocol).reshape(-1), whole), (name, chunk)
            _assert_same(whole, synthesis.synthesize(*maps, protocol).reshape(-1))
    finally:
        torch.set_num_threads(previous)


def test_vector_length_gives_whole_vectors_to_every_thread():
    for threads in (1, 2, 3, 4, 6, 16):
        for n in (1, 63, 64, 65, 1000, 32767, 32768, 40000, 65537, 100000, 524288, 524289, 10 ** 7 + 1):
            length = _vector_length_with(threads, n)
            used = 1 if length < physics._GRAIN or threads == 1 else min(threads, -(-length // physics._GRAIN))
            assert n <= length < n + physics._VECTOR * used and length % (physics._VECTOR * used) == 0, (threads, n)


def _vector_length_with(threads, n):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return physics.vector_length(n)
    finally:
        torch.set_num_threads(previous)


def test_default_path_handles_degenerate_relaxation_times(small_chunks):
    """No tissue written every way: 0, -0, negative, denormal and just-below-threshold times, and T = inf
    (no relaxation at all), in T1 and in T2, as the differentiable path treats them."""
    special = torch.tensor([0.0, -0.0, -5.0, 1e-40, 1e-30, 1e-6, 2e-6, float("inf"), 850.0, 4000.0])
    t1, t2 = torch.meshgrid(special, special, indexing="ij")
    pd = torch.full_like(t1, 0.7)
    for sequence in sorted(SEQUENCES):
        for protocol in _protocols(sequence):
            out = synthesis.synthesize_volume(t1, t2, pd, protocol)
            ref = synthesis.synthesize(t1, t2, pd, protocol)
            assert not out.isnan().any()
            assert torch.equal(out, ref), f"{sequence} {protocol}"


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_decay_clamped_is_decay(dtype):
    """decay_clamped(t, T, T clamped) is decay(t, T) to the last bit: every time (0 and tiny ones use the
    mask, longer ones underflow), float and tensor times, no tissue (0, -0, negative, denormal, at the
    threshold) exactly 0, tissue through the same decay_factor."""
    relaxation_times = torch.tensor([0.0, -0.0, -3.0, 1e-30, 1e-7, 1e-6, 1.1e-6, 1e-3, 0.5, 45.0, 850.0, 4500.0, float("inf")],
                                    dtype=dtype)
    clamped = relaxation_times.clamp(min=physics.NO_TISSUE_BELOW)
    for t in (0.0, 1e-5, 1e-4, 1e-3, 0.0105, 2.0, 90.0, 9000.0, torch.tensor(0.0, dtype=dtype), torch.tensor(90.0, dtype=dtype)):
        fast = physics.decay_clamped(t, relaxation_times, clamped)
        assert torch.equal(fast, physics.decay(t, relaxation_times)), t
        assert torch.equal(fast[:6], torch.zeros_like(fast[:6])), t
        out = torch.empty(physics.vector_length(relaxation_times.numel()), dtype=dtype)  # with exp2's padding
        into = physics.decay_clamped(t, relaxation_times, clamped, out=out)
        assert into.data_ptr() == out.data_ptr() and torch.equal(into, fast)


def test_decay_is_exp():
    """The exp2 form is exp(-t/T) to float precision: its logarithm is -t/T within a few float32 (float64)
    roundings of -t/T, as exp's own would be (the division rounds -t/T already)."""
    t1 = torch.linspace(1.0, 5000.0, 10001, dtype=F64)
    for t in (0.5, 10.0, 90.0, 2400.0, 9000.0):
        x = -t / t1
        for dtype, smallest, rounding in ((F64, 1e-300, 1e-15), (torch.float32, 1e-37, 3e-7)):
            factor = physics.decay(t, t1.to(dtype)).double()
            normal = factor > smallest  # denormals carry fewer digits
            error = (factor[normal].log() - x[normal]).abs()
            assert (error <= rounding * (1 + x[normal].abs())).all(), (dtype, float((error / (1 + x[normal].abs())).max()))


def _expressions(chunks, plain):
    """Pairs (chunk expression, the same on plain tensors) exercising every pending form of _Chunk."""
    (a, b, c), (pa, pb, pc) = chunks, plain
    alpha = torch.tensor(0.3, dtype=pa.dtype)
    return [
        (1 - 2 * a + b, 1 - 2 * pa + pb),
        (c * (1 - 2 * a + 2 * b - a * b) * b, pc * (1 - 2 * pa + 2 * pb - pa * pb) * pb),
        (abs(c * (0.5 - a)), (pc * (0.5 - pa)).abs()),
        ((c * (1 - a) - 3).abs(), (pc * (1 - pa) - 3).abs()),
        (-(a - b) / 4 + 1, -(pa - pb) / 4 + 1),
        (c * torch.sin(alpha) * (1 - a) / (1 - torch.cos(alpha) * a) * b,
         pc * torch.sin(alpha) * (1 - pa) / (1 - torch.cos(alpha) * pa) * pb),
        ((a + 2) * (b - 1), (pa + 2) * (pb - 1)),
        ((a - 0.5).abs() + (b - 0.5).abs() - (a - 0.5).abs(), (pa - 0.5).abs() + (pb - 0.5).abs() - (pa - 0.5).abs()),
        ((a + 1) / (b + 2), (pa + 1) / (pb + 2)),
        (2 / (a + 1), 2 / (pa + 1)),
        (3 - a * 0 + b * 2 - 7 + a, 3 - pa * 0 + pb * 2 - 7 + pa),
        (torch.where(a - b > 0, (a - b) / torch.where(a > b, a, torch.ones_like(a)), torch.zeros_like(a)),
         torch.where(pa - pb > 0, (pa - pb) / torch.where(pa > pb, pa, torch.ones_like(pa)), torch.zeros_like(pa))),
        (physics.decay(500.0, c * 1000) * physics.decay(2000.0, c * 1000) + physics.decay(500.0, c * 1000),
         physics.decay(500.0, pc * 1000) * physics.decay(2000.0, pc * 1000) + physics.decay(500.0, pc * 1000)),
        # a function the chunk has no special form for, on two pending operands
        (torch.maximum(a * 2 + 1, b * 3 - 1), torch.maximum(pa * 2 + 1, pb * 3 - 1)),
        # comparisons from either side, masks in arithmetic and in where
        ((0.5 < a) * b + (torch.tensor(0.2, dtype=pa.dtype) > b) * 1.0, (0.5 < pa) * pb + (0.2 > pb) * 1.0),
        (torch.where(a < b, a, b * 2 - 1), torch.where(pa < pb, pa, pb * 2 - 1)),
        # where's other branch is inf (1/0) or nan (0/0) there: it must not leak into the result
        (torch.where(a > 0, 1 / a, torch.zeros_like(a)), torch.where(pa > 0, 1 / pa, torch.zeros_like(pa))),
        (torch.where(a * a > 0, (b - b) / a, 3.0), torch.where(pa * pa > 0, (pb - pb) / pa, 3.0)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_chunk_arithmetic_is_plain_torch_arithmetic(dtype):
    """The pending arithmetic of the chunk evaluator (exact scalings, one offset, absolute values, the last
    call written into the result, float masks) gives what plain torch gives to the last bit, for every form
    it combines, and returns its buffers to the pool."""
    gen = torch.Generator().manual_seed(11)
    plain = tuple(torch.rand(257, generator=gen, dtype=dtype) - 0.25 for _ in range(3))
    plain[0][:7] = 0.0  # exact zeros: 1/a is inf there
    pool = synthesis._Pool(257, dtype)
    chunks = tuple(synthesis._Chunk.of(p, pool) for p in plain)
    for k, (chunk, expected) in enumerate(_expressions(chunks, plain)):
        out = torch.empty(257, dtype=dtype)
        chunk.store(out)
        assert torch.equal(out, expected), f"expression {k}: {(out - expected).abs().max()}"
        assert torch.equal(chunk.tensor(), expected), f"expression {k}"
    del chunk, expected, chunks
    assert pool.created > 0 and len(pool.free) + len(pool.free_masks) == pool.created  # every buffer back


def test_chunks_are_sized_to_the_cache_after_the_first(small_chunks, monkeypatch):
    """The first chunk shows how many buffers the equation holds; the next ones fill the cache budget (up to
    _CHUNK), and the last takes what is left."""
    lengths = []
    original = synthesis.SIGNALS["dsir"]

    def spy(maps, protocol):
        lengths.append(maps[0].data.numel())
        return original(maps, protocol)

    monkeypatch.setitem(synthesis.SIGNALS, "dsir", spy)
    maps = _random_maps((10, 11, 37), torch.float32)  # 4070 voxels
    protocol = PRESETS["dSIR"].protocol
    synthesis.synthesize_volume(*maps, protocol)
    assert lengths == [300, 1000, 1000, 1000, 770]
    lengths.clear()
    peak = synthesis._pool(torch.float32).peak
    monkeypatch.setattr(synthesis, "_CACHE_BUDGET", 4 * peak * 4096 * 2)  # room for 8192 voxels: 4096-aligned
    monkeypatch.setattr(synthesis, "_CHUNK", 1 << 14)
    monkeypatch.setattr(synthesis, "_FIRST_CHUNK", 1000)
    out = synthesis.synthesize_volume(*_random_maps((25, 25, 25), torch.float32), protocol)  # 15625 voxels
    assert lengths == [1000, 8192, 6433]
    _assert_matches(out, synthesis.synthesize(*_random_maps((25, 25, 25), torch.float32), protocol))


def test_pool_buffers_return_and_stay_few(small_chunks):
    maps = _random_maps((23, 29, 31), torch.float32, seed=5)
    for name in sorted(PRESETS):
        synthesis.synthesize_volume(*maps, PRESETS[name].protocol)
        pool = synthesis._pool(torch.float32)
        assert pool.length == pool.capacity == small_chunks
        assert len(pool.free) + len(pool.free_masks) == pool.created <= 16, name  # all back; dSIR needs most


def test_default_path_from_several_threads(volume, small_chunks):
    """Concurrent calls (the Slicer preview and a batch job, say) each use their own buffers."""
    protocols = [PRESETS[n].protocol for n in ("T1w", "T2-FLAIR", "DIR", "dSIR", "T1w-GRE", "PSIR")]
    expected = [synthesis.synthesize(*volume, p) for p in protocols]
    results = [None] * len(protocols)

    def run(k):
        for _ in range(3):
            results[k] = synthesis.synthesize_volume(*volume, protocols[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(protocols))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for out, ref in zip(results, expected):
        _assert_matches(out, ref)


def test_default_path_needs_no_compiler_or_sympy():
    """No start-up cost: the default path imports neither torch's compiler stack nor sympy (which
    torch.broadcast_shapes pulls in on its first call, ~0.5 s)."""
    code = (
        "import sys, torch\n"
        "from SyntheticMRILib.physics.synthesis import synthesize_volume\n"
        "from SyntheticMRILib.physics.protocols import PRESETS\n"
        "m = [torch.rand(9, 8, 7) * 1000 for _ in range(3)]\n"
        "for p in PRESETS.values(): synthesize_volume(*m, p.protocol)\n"
        "print(sorted(k for k in ('sympy', 'torch._dynamo', 'torch._inductor') if k in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_synthesize_volume_fused_path_matches_synthesize(name, volume, fresh_fusion):
    """The fused code path (flat maps, tensor parameters, the exp2 form of the decays, the result written
    into a given volume) for every preset, with the compiler replaced by running the kernel module as it is,
    so that no compilation is paid here (see the real-compile test)."""
    fresh_fusion.setattr(synthesis, "_compile_cpu", lambda kernel, dtype: kernel)
    protocol = PRESETS[name].protocol
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = synthesis.synthesize_volume(*volume, protocol, fused=True)
    _assert_matches(out, synthesis.synthesize(*volume, protocol))
    _assert_background_zero(out, volume)
    assert synthesis._fusion_failed is False
    strided = tuple(m.transpose(0, 2) for m in volume)
    _assert_matches(synthesis.synthesize_volume(*strided, protocol, fused=True), synthesis.synthesize(*strided, protocol))


def test_fused_falls_back_with_a_warning_when_compile_fails(volume, fresh_fusion):
    def broken_compile(kernel, dtype):
        raise RuntimeError("no compiler here")

    fresh_fusion.setattr(synthesis, "_compile_cpu", broken_compile)
    protocol = PRESETS["T2-FLAIR"].protocol
    with pytest.warns(RuntimeWarning, match="torch.compile"):
        out = synthesis.synthesize_volume(*volume, protocol, fused=True)
    _assert_matches(out, synthesis.synthesize(*volume, protocol))
    assert synthesis._fusion_failed is True
    # later calls go straight to the default path, silently, and are still right
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = synthesis.synthesize_volume(*volume, PRESETS["DIR"].protocol, fused=True)
    _assert_matches(out, synthesis.synthesize(*volume, PRESETS["DIR"].protocol))


def test_kernel_cache_path_follows_inductor_and_the_physics(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    path = synthesis._kernel_path("ir", torch.float32)
    assert path.startswith(str(tmp_path)) and path.endswith(".pt2")
    others = {synthesis._kernel_path("se", torch.float32), synthesis._kernel_path("ir", F64)}
    assert path not in others and len(others) == 2
    monkeypatch.setattr(synthesis, "_KERNEL_FORMAT", synthesis._KERNEL_FORMAT + 1)  # as an edit of the equations would
    assert synthesis._kernel_path("ir", torch.float32) != path


@pytest.mark.skipif(os.environ.get("SYNTHETICMRI_SKIP_COMPILE") == "1", reason="SYNTHETICMRI_SKIP_COMPILE=1")
def test_fused_with_real_compile_cold_then_warm(fresh_fusion, tmp_path):
    """A real compile into an empty cache, new parameter values through the same kernel, and a fresh process
    that finds the kernel in the cache: it loads it without importing the compiler, and gets the same volume.
    Skipped where compilation is unavailable."""
    fresh_fusion.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    maps = _random_maps((9, 10, 11), torch.float32, seed=7)
    protocol = PRESETS["T2-FLAIR"].protocol
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = synthesis.synthesize_volume(*maps, protocol, fused=True)
        except Exception as error:  # pragma: no cover - depends on the machine
            pytest.skip(f"compilation unavailable: {type(error).__name__}: {error}")
    if synthesis._fusion_failed or any("unavailable" in str(w.message) for w in caught):
        pytest.skip("compilation unavailable on this machine (the library fell back to the default path)")
    _assert_matches(out, synthesis.synthesize(*maps, protocol))
    _assert_background_zero(out, maps)
    other = dataclasses.replace(protocol, tr=protocol.tr * 1.25)
    _assert_matches(synthesis.synthesize_volume(*maps, other, fused=True), synthesis.synthesize(*maps, other))
    bigger = _random_maps((31, 37, 41), torch.float32, seed=8)  # any size: one kernel for every volume
    _assert_matches(synthesis.synthesize_volume(*bigger, other, fused=True), synthesis.synthesize(*bigger, other))
    assert len(list(tmp_path.rglob("*.pt2"))) == 1
    torch.save(maps, tmp_path / "maps.pt")
    torch.save(out, tmp_path / "expected.pt")
    code = (
        "import sys, torch\n"
        "from SyntheticMRILib.physics import synthesis\n"
        "from SyntheticMRILib.physics.protocols import PRESETS\n"
        f"maps = torch.load({str(tmp_path / 'maps.pt')!r})\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "out = synthesis.synthesize_volume(*maps, PRESETS['T2-FLAIR'].protocol, fused=True)\n"
        "assert not synthesis._fusion_failed\n"
        "assert torch.equal(out, expected)\n"
        "print('torch._inductor' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


# ------------------------------------------------------------------ purity


def test_nothing_is_modified_in_place(fresh_fusion):
    fresh_fusion.setattr(torch, "compile", lambda fn, **kwargs: fn)
    fresh_fusion.setattr(synthesis, "_compile_cpu", lambda kernel, dtype: kernel)
    for name, (fn, kw) in FUNCTIONS.items():
        maps = _random_maps((2, 3, 4), F64)
        params = {k: torch.tensor([v, v * 0.9], dtype=F64).reshape(2, 1, 1, 1) for k, v in kw.items()}
        before = [m.clone() for m in maps], {k: v.clone() for k, v in params.items()}
        fn(*maps, **params)
        assert all(torch.equal(a, b) for a, b in zip(maps, before[0])), name
        assert all(torch.equal(params[k], before[1][k]) for k in params), name
    for name, p in PRESETS.items():
        maps = _random_maps((2, 3, 4), torch.float32)
        before = [m.clone() for m in maps]
        tensor_protocol = dataclasses.replace(
            p.protocol, **{f: torch.tensor(float(getattr(p.protocol, f))) for f in ("tr", "te", "ti", "ti2", "flip") if getattr(p.protocol, f) is not None}
        )
        params_before = dataclasses.astuple(tensor_protocol)
        params_before = [v.clone() if torch.is_tensor(v) else v for v in params_before]
        synthesis.synthesize(*maps, p.protocol)
        synthesis.synthesize(*maps, tensor_protocol)
        synthesis.synthesize_volume(*maps, p.protocol)
        synthesis.synthesize_volume(*maps, p.protocol, fused=True)
        assert all(torch.equal(a, b) for a, b in zip(maps, before)), name
        for a, b in zip(dataclasses.astuple(tensor_protocol), params_before):
            assert (torch.equal(a, b) if torch.is_tensor(a) else a == b), name


def test_tiny_positive_relaxation_times_have_finite_gradients():
    """Resampled maps can hold denormal-small T1/T2 at the brain edge: no NaN may come out of them."""
    t1 = torch.tensor([1e-19, 1e-30, 850.0], requires_grad=True)
    t2 = torch.tensor([1e-19, 80.0, 1e-30], requires_grad=True)
    pd = torch.tensor([0.7, 0.7, 0.7])
    signal = physics.inversion_recovery(t1, t2, pd, 5000.0, 10.0, 500.0)
    signal.sum().backward()
    assert torch.isfinite(signal).all() and torch.isfinite(t1.grad).all() and torch.isfinite(t2.grad).all()
