"""The learnable contrast module: presets reproduced, gradients to every parameter, bounds under attack."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from SyntheticMRILib.models.contrast import LearnableContrast
from SyntheticMRILib.physics.protocols import LEARNABLE_RANGES as BOUNDS
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.physics.protocols import preset
from SyntheticMRILib.physics.synthesis import synthesize


def maps(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    t1 = 300 + 3700 * torch.rand(2, n, n, generator=g, dtype=torch.float64)
    t2 = 30 + 1500 * torch.rand(2, n, n, generator=g, dtype=torch.float64)
    pd = 0.5 + 0.5 * torch.rand(2, n, n, generator=g, dtype=torch.float64)
    return t1, t2, pd


def test_start_from_presets_reproduces_them():
    names = ("T1w", "T2w", "T2-FLAIR", "DIR", "T1w-GRE")
    module = LearnableContrast.from_presets(names).double()
    for name, got in zip(names, module.protocols()):
        want = preset(name).protocol
        assert got.sequence == want.sequence
        for key in ("tr", "te", "ti", "ti2", "flip"):
            if getattr(want, key) is not None:
                assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-4), (name, key)
    t1, t2, pd = maps()
    images = module(t1, t2, pd)
    for k, name in enumerate(names):  # the same images as the physics layer gives for the preset itself
        torch.testing.assert_close(images[:, k], synthesize(t1, t2, pd, preset(name).protocol), rtol=1e-4, atol=1e-7)


def test_gradients_reach_every_parameter():
    module = LearnableContrast.from_presets(("T1w", "T2-FLAIR", "DIR", "T1w-GRE")).double()
    t1, t2, pd = maps()
    target = torch.rand(2, 4, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    images = module(t1, t2, pd)
    loss = ((images / images.abs().mean(dim=(-1, -2), keepdim=True) - target) ** 2).mean()
    loss.backward()
    for k, raw in enumerate(module.raw):
        assert raw.grad is not None and torch.all(torch.isfinite(raw.grad)), k
        assert torch.all(raw.grad.abs() > 0), (module.sequences[k], raw.grad)


def test_gradient_matches_finite_differences():
    """Through the bound mapping and the physics, for every parameter of an IR and a double IR."""
    module = LearnableContrast.from_presets(("T2-FLAIR", "DIR")).double()
    t1, t2, pd = maps(12)
    weights = torch.rand(2, 2, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def loss(first, second):
        images = torch.func.functional_call(module, {"raw.0": first, "raw.1": second}, (t1, t2, pd))
        return (images * weights).sum()

    start = tuple(raw.detach().clone().requires_grad_() for raw in module.raw)
    assert torch.autograd.gradcheck(loss, start, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_parameters_stay_physical_under_a_hostile_optimizer(sign):
    module = LearnableContrast.from_presets(("T1w", "T2-FLAIR", "DIR", "T1w-GRE"))
    optimizer = torch.optim.SGD(module.parameters(), lr=1e6)
    t1, t2, pd = (m.float() for m in maps())
    for step in range(3):
        loss = sign * module(t1, t2, pd).sum() + (step - 1) * 1e3 * sum(r.sum() for r in module.raw)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for protocol in module.protocols():  # validate() raises unless TE < TR, TI < TR, TI2 < TI, all > 0
            bounds = BOUNDS[protocol.sequence]
            assert bounds["tr"][0] * 0.999 <= protocol.tr <= bounds["tr"][1] * 1.001
            assert protocol.te >= bounds["te"][0] * 0.999 and protocol.te < protocol.tr
            if protocol.ti is not None:
                assert 0 < protocol.ti < protocol.tr
            if protocol.ti2 is not None:
                assert 0 < protocol.ti2 < protocol.ti
            if protocol.flip is not None:
                assert bounds["flip"][0] * 0.999 <= protocol.flip <= bounds["flip"][1] * 1.001
        assert all(torch.all(torch.isfinite(image)) for image in module(t1, t2, pd))


def test_frozen_module_has_no_trainable_parameters_and_random_start_is_seeded():
    frozen = LearnableContrast.from_presets(learnable=False)
    assert not any(p.requires_grad for p in frozen.parameters())
    a = LearnableContrast.random(("se", "se", "ir"), seed=3).protocols()
    b = LearnableContrast.random(("se", "se", "ir"), seed=3).protocols()
    c = LearnableContrast.random(("se", "se", "ir"), seed=4).protocols()
    assert a == b and a != c


def test_bad_sequences_are_refused():
    with pytest.raises(InputError, match="learnable sequences"):
        LearnableContrast(["dsir"])
    with pytest.raises(InputError, match="sequence of its contrast"):
        LearnableContrast(["se"], [preset("T2-FLAIR").protocol])
    np.testing.assert_equal(len(LearnableContrast(["gre"]).raw[0]), 3)
