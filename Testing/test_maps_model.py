"""The map estimator's pieces: routine protocols, the network's gain invariance, the physics term, the per-voxel
fit, the randomized tissue model, the metrics, and a training run end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.volumes import read_volume
from SyntheticMRILib.models.mapper import (MapNet, load_mapper, network_input, outputs_to_maps, predict_maps,
                                           save_mapper, series_scales)
from SyntheticMRILib.models.voxelfit import calibrate_gains, fit_maps
from SyntheticMRILib.physics.routine import (RANGES_MS, SERIES, draw_protocols, outside_ranges, parameter_vector,
                                             series_protocols)
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.training.config import MapTrainConfig
from SyntheticMRILib.training.map_metrics import map_scores, psnr, ssim
from SyntheticMRILib.training.mapper import map_loss, train_maps_command
from SyntheticMRILib.training.routine import TISSUE_NAMES, RandomTissueValues

VALUES = {"t1w": {"tr": 500, "te": 10}, "t2w": {"tr": 4500, "te": 100}, "flair": {"tr": 9000, "te": 90, "ti": 2372}}
TINY = {"channels": [4, 8], "context": 1, "embedding": 8, "variant": "film", "physics_term": True}


def _voxels(n=400, seed=0):
    rng = np.random.default_rng(seed)
    t1 = np.exp(rng.uniform(np.log(300), np.log(4000), n))
    t2 = np.minimum(np.exp(rng.uniform(np.log(30), np.log(2000), n)), 0.9 * t1)
    pd = rng.uniform(0.5, 1.0, n)
    return [torch.tensor(a, dtype=torch.float32) for a in (t1, t2, pd)]


def test_protocols_are_checked_and_named_by_series():
    protocols = series_protocols(VALUES)
    assert protocols["flair"].sequence == "ir" and protocols["t1w"].sequence == "se"
    with pytest.raises(InputError, match="flair: missing TI"):
        series_protocols({**VALUES, "flair": {"tr": 9000, "te": 90}})
    with pytest.raises(InputError, match="t2w: TE must be below TR"):
        series_protocols({**VALUES, "t2w": {"tr": 100, "te": 100}})
    with pytest.raises(InputError, match="t1w: a SE series takes no TI"):
        series_protocols({**VALUES, "t1w": {"tr": 500, "te": 10, "ti": 100}})
    with pytest.raises(InputError, match="seconds"):
        series_protocols({**VALUES, "t1w": {"tr": 0.5, "te": 0.01}})


def test_the_parameter_vector_maps_each_range_onto_minus_a_half_to_a_half():
    low = series_protocols({s: {p: lo for p, (lo, hi) in RANGES_MS[s].items()} for s in SERIES})
    high = series_protocols({s: {p: hi for p, (lo, hi) in RANGES_MS[s].items()} for s in SERIES})
    assert np.allclose(parameter_vector(low), -0.5) and np.allclose(parameter_vector(high), 0.5)


def test_draws_stay_inside_the_ranges_and_out_of_range_draws_leave_every_one():
    rng = np.random.default_rng(1)
    for _ in range(50):
        assert outside_ranges(draw_protocols(rng)) == []
        beyond = draw_protocols(rng, outside=True)
        assert len(outside_ranges(beyond)) == 7
        for series, p in beyond.items():
            for name, (lo, hi) in RANGES_MS[series].items():
                assert 0.8 * lo <= getattr(p, name) <= 1.2 * hi


def test_the_network_sees_no_receiver_gain():
    """Each series divided by its median over the head: scaling a series changes nothing downstream."""
    torch.manual_seed(0)
    model = MapNet(TINY).eval()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (3, 4, 16, 16)).astype(np.float32) * (np.arange(16) > 3)
    protocols = series_protocols(VALUES)
    base = predict_maps(model, images, protocols, torch.device("cpu"))
    scaled = predict_maps(model, images * np.array([7.0, 0.01, 300.0], np.float32)[:, None, None, None], protocols,
                          torch.device("cpu"))
    for a, b in zip(base, scaled):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4)
    assert np.allclose(series_scales(images * 5), 5 * series_scales(images), rtol=1e-5)


def test_the_protocol_embedding_changes_the_output_and_its_absence_does_not():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    for embedding, changes in ((8, True), (0, False)):
        model = MapNet({**TINY, "embedding": embedding}).eval()
        if embedding:  # FiLM starts as the identity; give it weights
            for film in model.film_down:
                torch.nn.init.normal_(film.to_affine.weight)
        a = model(x, torch.zeros(2, 7))
        b = model(x, torch.ones(2, 7))
        assert (not torch.allclose(a, b)) == changes


def test_two_and_a_half_d_input_stacks_each_slice_with_its_neighbours():
    images = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 4, 1, 1).expand(3, 4, 2, 2)
    x = network_input(images, 3)
    assert x.shape == (4, 9, 2, 2)
    # slice 0: series 0 at slices 0 (edge repeated), 0, 1; series 1 at 0, 0, 1 ...
    assert x[0, :, 0, 0].tolist() == [0, 0, 1, 4, 4, 5, 8, 8, 9]
    assert x[2, :3, 0, 0].tolist() == [1, 2, 3]
    assert network_input(images, 1).shape == (4, 3, 2, 2)


def test_outputs_are_zero_outside_the_head_and_t2_never_exceeds_t1():
    out = torch.randn(2, 4, 8, 8) * 3
    t1, t2, pd = outputs_to_maps(out)
    outside = torch.sigmoid(out[:, 3]) <= 0.5
    assert (t1[outside] == 0).all() and (t2[outside] == 0).all() and (pd[outside] == 0).all()
    assert (t2 <= t1).all() and (pd <= 1).all()


def test_saved_models_are_half_precision_and_load_back(tmp_path):
    model = MapNet(TINY).eval()
    path = save_mapper(model, tmp_path / "m.pt")
    loaded = load_mapper(path)
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(model(x, torch.zeros(1, 7)), loaded(x, torch.zeros(1, 7)), atol=2e-2)
    with pytest.raises(InputError, match="not a SyntheticMRI map model"):
        (tmp_path / "bad.pt").write_bytes(b"nonsense")
        load_mapper(tmp_path / "bad.pt")


def test_the_physics_term_vanishes_for_the_true_maps_at_any_gain_and_not_for_wrong_ones():
    t1, t2, pd = (v.reshape(1, 20, 20) for v in _voxels())
    protocols = series_protocols(VALUES)
    gains = (3.0, 0.2, 50.0)
    inputs = torch.stack([g * synthesize(t1[0], t2[0], pd[0], protocols[s]) for g, s in zip(gains, SERIES)])[None]
    logit = lambda p: torch.log(p / (1 - p))  # noqa: E731
    truth = torch.stack([torch.log(t1 / 1000), torch.log(t2 / 100), logit(pd), torch.full_like(t1, 9.0)], 1)
    targets = torch.stack([t1, t2, pd], 1)
    _, right = map_loss(truth, targets, inputs, [protocols], 1, 1.0)
    assert right["physics"] < 1e-4 and right["maps"] < 1e-4
    wrong = truth.clone()
    wrong[:, 0] += 0.3  # T1 35 % too long
    _, parts = map_loss(wrong, targets, inputs, [protocols], 1, 1.0)
    assert parts["physics"] > 0.02 and abs(parts["maps"] - 0.3) < 1e-3


def test_the_voxel_fit_recovers_noise_free_maps_within_its_dictionary_step():
    t1, t2, pd = _voxels()
    protocols = series_protocols(VALUES)
    gains = np.array([2.0, 30.0, 0.5])
    images = np.stack([g * synthesize(t1, t2, pd, protocols[s]).numpy() for g, s in zip(gains, SERIES)])[:, None, None]
    f1, f2, fpd = fit_maps(images, np.ones(images.shape[1:], bool), protocols, gains)
    assert np.median(np.abs(f1.ravel() / t1.numpy() - 1)) < 0.02
    assert np.median(np.abs(f2.ravel() / t2.numpy() - 1)) < 0.02
    assert np.median(np.abs(fpd.ravel() / pd.numpy() - 1)) < 0.03


def test_gain_calibration_on_a_reference_tissue_finds_the_gains():
    from SyntheticMRILib.physics.tissues import relaxation

    wm = relaxation("cerebral_wm", 3.0)
    t = [torch.full((10,), v, dtype=torch.float32) for v in (wm.t1, wm.t2, wm.pd)]
    protocols = series_protocols(VALUES)
    gains = np.array([5.0, 0.1, 80.0])
    images = np.stack([g * synthesize(*t, protocols[s]).numpy() for g, s in zip(gains, SERIES)])
    assert np.allclose(calibrate_gains(images, np.ones(10, bool), protocols), gains, rtol=1e-4)


def test_the_randomized_tissue_model_moves_each_tissue_as_one_and_keeps_physics():
    rng = np.random.default_rng(3)
    tissues = RandomTissueValues()
    factors = tissues.draw(rng)
    assert factors.shape == (len(TISSUE_NAMES) + 1, 3) and np.all(factors[0] == 1)
    index = torch.tensor([[1, 1, 2, 2]])
    maps = torch.tensor([[[1000.0, 1000, 900, 900]], [[900.0, 900, 80, 80]], [[0.99, 0.99, 0.7, 0.7]]])
    out = tissues.apply(maps, index, factors)
    assert out[0, 0, 0] == out[0, 0, 1] and out[0, 0, 2] == out[0, 0, 3]  # one factor per tissue
    assert (out[1] <= 0.95 * out[0] + 1e-4).all() and (out[2] <= 1).all()
    spread = np.log(np.stack([tissues.draw(rng)[1:] for _ in range(400)]))
    assert 0.12 < spread[..., 0].std() < 0.2  # sqrt(0.12^2 + 0.10^2) = 0.156


def test_ssim_matches_an_independent_gaussian_window_computation():
    """Wang et al.'s SSIM with a Gaussian window (sigma 1.5, 11 taps), by scipy filters, on the valid region."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    truth = gaussian_filter(rng.uniform(0, 1000, (1, 40, 40)), (0, 2, 2)).astype(np.float32)
    noisy = (truth + rng.normal(0, 30, truth.shape)).astype(np.float32)
    peak = float(truth.max())
    blur = lambda a: gaussian_filter(a.astype(np.float64), (0, 1.5, 1.5), truncate=5 / 1.5)  # noqa: E731
    mx, my = blur(noisy), blur(truth)
    vx, vy, cxy = blur(noisy * noisy) - mx ** 2, blur(truth * truth) - my ** 2, blur(noisy * truth) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    ssim_map = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    mask = np.zeros(truth.shape, bool)
    mask[:, 8:30, 10:35] = True
    # kernels discretized differently (MONAI vs scipy) differ by ~0.002; sigma 1.0 or 2.0 would move it by ~0.06-0.08
    assert ssim(noisy, truth, mask) == pytest.approx(float(ssim_map[mask].mean()), abs=5e-3)


def test_the_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    truth = rng.uniform(100, 1000, (4, 20, 20)).astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[:, 5:15, 5:15] = True
    noisy = truth + rng.normal(0, 10, truth.shape).astype(np.float32)
    expected = 10 * math.log10(truth[mask].max() ** 2 / np.mean((noisy[mask] - truth[mask]) ** 2))
    assert psnr(noisy, truth, mask) == pytest.approx(expected, rel=1e-6)
    assert ssim(truth, truth, mask) == pytest.approx(1.0, abs=1e-5)
    assert ssim(noisy, truth, mask) < ssim(truth + 1.0, truth, mask) < 1.0
    labels = np.zeros(truth.shape, np.int32)
    labels[mask] = 2  # cerebral white matter
    scores = map_scores([noisy, truth, truth * 1.1], [truth, truth, truth], labels)
    assert scores["pd"]["mape"] == pytest.approx(10.0, rel=1e-4) and scores["pd"]["err_wm"] == pytest.approx(10.0, rel=1e-4)
    assert scores["t2"]["psnr"] == float("inf")


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    """train/val/test phantom folders whose one subject is the bundled sample, cut to 12 slices (speed)."""
    from SyntheticMRILib.io.volumes import Volume, write_volume

    root = tmp_path_factory.mktemp("data")
    files = {}
    for name, path in sample_paths().items():
        volume = read_volume(path)
        cut = Volume(np.ascontiguousarray(volume.array[74:86]), volume.spacing, volume.origin, volume.direction)
        files[name] = str(write_volume(cut, root / f"{name}.nrrd"))
    subject = {"id": "sample", "files": files, "field_strength": 3.0, "lesion": None}
    for split in ("train", "val", "test"):
        (root / split).mkdir()
        (root / split / "manifest.json").write_text(json.dumps({"lesions": "none", "subjects": [subject]}))
    return root


def test_train_maps_resumes_writes_its_card_and_guards_its_folder(sample_data, tmp_path):
    from SyntheticMRILib.training.mapper import _val_batches, train_map_variant
    from SyntheticMRILib.training.routine import RoutineBank

    config = MapTrainConfig(steps=4, batch=2, crop=64, channels=(4, 8), embedding=8, evaluations=2)
    out = tmp_path / "out"
    out.mkdir()
    short = MapTrainConfig(**{**config.__dict__, "steps": 2})
    train_map_variant("film", RoutineBank(sample_data / "train"), _val_batches(sample_data / "val", short), short, out,
                      torch.device("cpu"), log=lambda _: None)  # a run cut off after 2 steps
    other = MapTrainConfig(**{**config.__dict__, "seed": 1})
    with pytest.raises(InputError, match="another recipe"):
        train_maps_command(sample_data, out, other, ["film"], log=lambda _: None)
    said = []
    report = train_maps_command(sample_data, out, config, ["film", "no-embedding"], eval_limit=1, log=said.append)
    assert "film: resuming at step 2" in said
    assert report["chosen"] in ("film", "no-embedding") and set(report["tables"]) == {"test", "out-of-range"}
    test = report["tables"]["test"]
    assert set(test) == {"film", "no-embedding", "voxel-fit"}
    for row in test.values():
        assert row["subjects"] == 1 and all(np.isfinite(row[m]["psnr"]) for m in ("t1", "t2", "pd"))
    # the classical fit, with calibrated gains on noisy data, beats an untrained network on T1
    assert test["voxel-fit"]["t1"]["mape"] < test["film"]["t1"]["mape"]
    card = (out / "MODEL_CARD.md").read_text()
    assert report["sha256"] in card and "### out-of-range" in card and (out / "loss.png").stat().st_size > 1000
    assert load_mapper(out / "maps.pt").config["variant"] == report["chosen"]
    with pytest.raises(InputError, match="finished run"):
        train_maps_command(sample_data, out, config, ["film"], log=lambda _: None)
