"""Re-parameterization's pieces: scan protocols, the physics engine's guarantees (the input protocol returns the
input; any target the physics layer knows lands on the input grid; its images follow the closed forms), the
direct engine's network, the training pairs, the metrics, and a training run end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume
from SyntheticMRILib.models.reparam import (DirectNet, ScanMaps, load_reparam, predict_direct,
                                            predict_scan_maps, reparameterize)
from SyntheticMRILib.physics.protocols import Protocol, preset
from SyntheticMRILib.physics.scans import (DEFAULT_INPUT, SCAN_RANGES_MS, draw_scan, outside_scan_ranges,
                                           scan_vector)
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.training.config import ReparamTrainConfig
from SyntheticMRILib.training.reparam import PairBank, train_reparam_command
from SyntheticMRILib.training.reparam_eval import image_scores, to_255

T2W = Protocol("se", 4500.0, 100.0)


def _sample(k0=70, k1=90):
    maps = {name: read_volume(path) for name, path in sample_paths().items()}
    return {name: Volume(np.ascontiguousarray(v.array[k0:k1]), v.spacing, v.origin, v.direction) for name, v in maps.items()}


def _scan(maps, protocol, gain=250.0, noise=0.01, seed=0):
    tensors = [torch.from_numpy(maps[m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    image = synthesize(*tensors, protocol).numpy()
    rng = np.random.default_rng(seed)
    image = np.abs(image + rng.normal(0, noise, image.shape)).astype(np.float32) * gain
    return maps["t1"].with_array(image)


def test_scan_draws_stay_in_their_ranges_and_out_of_range_draws_leave_one():
    rng = np.random.default_rng(0)
    for _ in range(100):
        p = draw_scan(rng)
        assert outside_scan_ranges(p) == [] and p.sequence in SCAN_RANGES_MS
        if p.sequence == "ir":
            assert p.tr >= 2.5 * p.ti * (1 - 1e-9)
        assert all(-0.5 - 1e-9 <= v <= 0.5 + 1e-9 for v in scan_vector(p)[1:])
    for _ in range(50):
        assert len(outside_scan_ranges(draw_scan(rng, outside=True))) == 1
    # an IR whose TR is in range but leaves less recovery than every training draw: warned, once
    assert outside_scan_ranges(Protocol("ir", 3000, 80, 1500)) == ["TR 3000 ms (>= 2.5 TI = 3750)"]
    assert outside_scan_ranges(Protocol("ir", 3750, 80, 1500)) == []
    assert outside_scan_ranges(Protocol("ir", 1800, 80, 1500)) == ["TR 1800 ms (2000-11000)"]
    assert scan_vector(Protocol("se", 500, 10))[0] == 0 and scan_vector(Protocol("ir", 9000, 90, 2500))[0] == 1
    lo = scan_vector(Protocol("se", 400, 8))
    hi = scan_vector(Protocol("ir", 11000, 150, 3000))
    assert lo[1:3] == pytest.approx([-0.5, -0.5]) and hi[1:] == pytest.approx([0.5, 0.5, 0.5])


@pytest.fixture(scope="module")
def shipped():
    return load_reparam("physics")


def test_shipped_weights_match_the_model_card():
    """Both engines ship (<= 20 MB each, the issue's limit), the card names each file's sha256, and the shipped direct
    model is the param-to-param one (it takes any input protocol)."""
    import re

    from SyntheticMRILib.resources import resource_path, sha256

    card = resource_path("Models", "reparam", "MODEL_CARD.md").read_text()
    listed = dict(re.findall(r"`(\w+\.pt)` sha256 `([0-9a-f]{64})`", card))
    assert set(listed) == {"physics.pt", "direct.pt"}
    for name, digest in listed.items():
        path = resource_path("Models", "reparam", name)
        assert sha256(path) == digest and path.stat().st_size <= 20 * 2 ** 20, name
    assert load_reparam("direct").mode == "param"


def test_the_physics_engine_gives_back_its_input_at_the_input_protocol(shipped):
    """The issue's guarantee: MAE <= 3/255 (each image over its head's 99.5th percentile), here on a noisy scan
    with an arbitrary gain, for a T2w and a FLAIR input; without the carried residual it is the maps' own fit."""
    maps = _sample()
    head = maps["pd"].array > 0
    for protocol in (T2W, Protocol("ir", 9000.0, 90.0, 2500.0)):
        scan = _scan(maps, protocol)
        found = predict_scan_maps(scan, protocol, shipped)
        same = found.render(protocol)
        assert image_scores(same, scan.array, head)["mae"] <= 3.0
        smooth = image_scores(found.render(protocol, detail=False), scan.array, head)["mae"]
        assert 0.5 < smooth < 30  # the maps alone do not reproduce the noise and texture: the residual does


def test_the_output_is_in_the_input_scale_whatever_the_gain(shipped):
    """A scan at receiver gain g: the maps' T1w (no residual) is g x the true T1w where there is signal (median ratio
    within 15 %), and the whole output follows g exactly (the input is divided by its head median)."""
    maps = _sample()
    tensors = [torch.from_numpy(maps[m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    target = Protocol("se", 500.0, 12.0)
    truth = synthesize(*tensors, target).numpy()
    bright = (maps["pd"].array > 0) & (truth > 0.2 * truth.max())
    outputs = {}
    for gain in (3.0, 2500.0):
        found = predict_scan_maps(_scan(maps, T2W, gain=gain), T2W, shipped)
        smooth = found.render(target, detail=False)
        assert float(np.median(smooth[bright] / (gain * truth[bright]))) == pytest.approx(1.0, abs=0.15)
        outputs[gain] = found.render(target)
    assert np.allclose(outputs[2500.0], outputs[3.0] * (2500.0 / 3.0), rtol=1e-3, atol=1e-2)


def test_a_target_only_the_physics_engine_makes_lands_on_the_input_grid(shipped, tmp_path):
    """DIR from a T2w, on a 1.2 x 1.1 x 2 mm oblique grid: the output has the input's grid, and grey matter is
    brighter than white matter and CSF (what DIR shows), measured with the sample's own labels."""
    import SimpleITK as sitk

    from SyntheticMRILib.io.grid import resample

    maps = _sample(60, 100)
    angle = math.radians(10)
    direction = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    reference = maps["t1"]
    shape = (20, 180, 150)
    oblique = Volume(np.zeros(shape, np.float32), (1.2, 1.1, 2.0), tuple(np.asarray(reference.origin) + [10, 10, 2]),
                     tuple(direction.ravel()))
    moved = {n: oblique.with_array(resample(v.with_array(v.array.astype(np.float32)), oblique,
                                            sitk.sitkNearestNeighbor if n == "labels" else sitk.sitkLinear))
             for n, v in maps.items()}
    scan = _scan(moved, T2W)
    out = reparameterize(scan, T2W, preset("DIR").protocol, "physics", shipped)
    assert out.same_grid(scan) and out.array.shape == scan.array.shape and np.isfinite(out.array).all()
    labels = np.rint(moved["labels"].array).astype(int)
    mean = {name: float(out.array[np.isin(labels, codes)].mean())
            for name, codes in {"gm": (3, 42), "wm": (2, 41), "csf": (4, 43, 24)}.items()}
    assert mean["gm"] > 1.5 * mean["wm"] and mean["gm"] > 1.5 * mean["csf"]


def test_rendering_follows_the_closed_form_and_keeps_the_input_scale():
    """ScanMaps.render without the residual = gain x the full spin echo (refocusing at TE/2; numpy, by hand); with it,
    the residual scales by S_target / S_input (f = 0) capped at 1, and a signed target keeps its sign."""
    rng = np.random.default_rng(0)
    t1 = rng.uniform(600, 4000, (2, 8, 8)).astype(np.float32)
    t2 = np.minimum(rng.uniform(50, 2000, t1.shape), 0.9 * t1).astype(np.float32)
    pd = rng.uniform(0.6, 1.0, t1.shape).astype(np.float32)
    grid = Volume(np.zeros(t1.shape, np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    image = rng.uniform(50, 60, t1.shape).astype(np.float32)
    scan = ScanMaps(grid.with_array(image), T2W, (t1, t2, pd), gain=40.0, floor=0.0)
    target = Protocol("se", 600.0, 12.0)
    def closed(p):
        return pd * (1 - 2 * np.exp(-(p.tr - p.te / 2) / t1) + np.exp(-p.tr / t1)) * np.exp(-p.te / t2)

    assert scan.render(target, detail=False) == pytest.approx(40.0 * closed(target), rel=1e-4)
    ratio = closed(target) / closed(T2W)
    assert (ratio > 1).any() and (ratio < 1).any()  # both sides of the cap are exercised
    expected = 40.0 * closed(target) + (image - 40.0 * closed(T2W)) * np.minimum(ratio, 1.0)
    assert scan.render(target) == pytest.approx(np.clip(expected, 0, None), rel=1e-3, abs=1e-3)
    assert scan.render(T2W) == pytest.approx(image, rel=1e-5)
    assert scan.render(target, region=(1,)).shape == (8, 8)
    psir = scan.render(Protocol("psir", 5000.0, 10.0, ti=1000.0), detail=False)
    assert (psir < 0).any() and (psir > 0).any()
    dsir = preset("dSIR").protocol  # a ratio of two IRs: no residual carried
    assert np.array_equal(scan.render(dsir), scan.render(dsir, detail=False))


def test_the_direct_network_keeps_its_range_and_its_mode():
    net = DirectNet({"channels": [4, 8, 8], "mode": "default", "range": 10.0})
    out = net(torch.rand(3, 1, 32, 32) * 5, torch.randn(3, 4)).detach()
    assert out.shape == (3, 1, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 10
    grid = Volume(np.random.default_rng(0).uniform(0, 1, (4, 20, 20)).astype(np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match="reads inputs at TR 4500 TE 50 only"):
        predict_direct(net, grid, T2W, Protocol("se", 500, 10))
    param = DirectNet({"channels": [4, 8, 8], "mode": "param", "range": 10.0})
    with pytest.raises(InputError, match="the physics engine makes any"):
        predict_direct(param, grid, T2W, preset("DIR").protocol)
    out = predict_direct(param, grid.with_array(grid.array * 1000), T2W, Protocol("se", 500, 10))
    assert out.shape == grid.array.shape and out.min() >= 0  # back in the input's scale: 0-10 medians of ~500
    assert 0 < np.median(out) < 10 * 1000


def test_pairs_share_the_scanner_and_the_target_has_no_noise():
    root_maps = _sample(74, 86)
    bank = PairBank.__new__(PairBank)
    bank.tissues = None
    bank.subjects = [{"maps": torch.from_numpy(np.stack([root_maps[m].array.astype(np.float32) for m in ("t1", "t2", "pd")])),
                      "tissues": torch.zeros(root_maps["t1"].array.shape, dtype=torch.uint8), "grid": root_maps["labels"]}]
    batch = bank.sample_pairs(4, 64, 3, np.random.default_rng(0))
    assert batch["inputs"].shape == (4, 3, 64, 64) and batch["targets"].shape == (4, 64, 64)
    for b in range(4):
        inside = batch["maps"][b, 2] > 0
        if inside.sum() < 200:
            continue
        truth = synthesize(*batch["maps"][b], batch["protocols"][b])
        target = synthesize(*batch["maps"][b], batch["target_protocols"][b])
        where = inside & (truth > 0.1 * truth.max()) & (target > 0.1 * target.max())  # away from nulled tissue
        ratio = batch["inputs"][b, 1][where] / truth[where]
        target_ratio = batch["targets"][b][where] / target[where]
        # same gain and bias: the ratios' medians agree (noise and blur aside)
        assert float(ratio.median()) == pytest.approx(float(target_ratio.median()), rel=0.15)
    default = bank.sample_pairs(2, 64, 1, np.random.default_rng(1), default_input=True)
    assert all(p == DEFAULT_INPUT for p in default["protocols"])


def test_image_scores_are_on_the_8_bit_scale():
    rng = np.random.default_rng(0)
    truth = rng.uniform(10, 100, (4, 16, 16)).astype(np.float32)
    head = np.ones(truth.shape, bool)
    assert image_scores(truth * 7.0, truth, head)["mae"] == pytest.approx(0.0, abs=1e-3)  # scale-free
    b = to_255(truth, head)
    assert b.max() == 255 and b.min() >= 0
    shifted = image_scores(truth + 10.0, truth, head)
    expected = float(np.mean(np.abs(to_255(truth + 10.0, head) - b)))
    assert shifted["mae"] == pytest.approx(expected, rel=1e-5) and shifted["psnr"] < 60


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    """train/val/test phantom folders whose one subject is the bundled sample, cut to 12 slices (speed)."""
    root = tmp_path_factory.mktemp("data")
    files = {name: str(write_volume(v, root / f"{name}.nrrd")) for name, v in _sample(74, 86).items()}
    subject = {"id": "sample", "files": files, "field_strength": 3.0, "lesion": None}
    for split in ("train", "val", "test"):
        (root / split).mkdir()
        (root / split / "manifest.json").write_text(json.dumps({"lesions": "none", "subjects": [subject]}))
    return root


def test_train_reparam_resumes_evaluates_both_engines_and_guards_its_folder(sample_data, tmp_path):
    config = ReparamTrainConfig(steps=4, batch=2, crop=64, channels=(4, 8), embedding=8, direct_channels=(4, 8, 8),
                                evaluations=2)
    out = tmp_path / "out"
    said = []
    train_reparam_command(sample_data, out, ReparamTrainConfig(**{**config.__dict__, "steps": 2}), "physics",
                          eval_limit=1, log=said.append)
    (out / "report.json").unlink()  # as if the run were cut off after its first 2 steps
    with pytest.raises(InputError, match="another recipe"):
        train_reparam_command(sample_data, out, ReparamTrainConfig(**{**config.__dict__, "seed": 3}), "physics", log=said.append)
    report = train_reparam_command(sample_data, out, config, "both", eval_limit=1, log=said.append)
    assert "physics: resuming at step 2" in said
    assert set(report["trained"]) == {"physics", "direct"} and set(report["tables"]) == {"test", "out-of-range"}
    param = report["tables"]["test"]["param"]
    assert set(param) == {"physics", "physics-smooth", "direct"}
    assert set(report["tables"]["test"]["default"]) == {"physics", "physics-smooth", "direct"}
    assert "DIR" not in " ".join(param["direct"]["targets"])
    for row in param.values():
        assert 0 <= row["se"]["mae"] <= 255 and 0 <= row["ir"]["mae"] <= 255
    card = (out / "MODEL_CARD.md").read_text()
    assert report["files"]["physics"]["sha256"] in card and "### out-of-range" in card
    assert (out / "examples.png").stat().st_size > 5000 and (out / "loss.png").stat().st_size > 1000
    assert load_reparam("direct", out / "direct.pt").mode == "param"
    with pytest.raises(InputError, match="finished run of direct"):
        train_reparam_command(sample_data, out, config, "direct", log=said.append)
    with pytest.raises(InputError, match="not a direct re-parameterization model"):
        load_reparam("direct", out / "physics.pt")
