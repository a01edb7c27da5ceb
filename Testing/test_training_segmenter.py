"""Joint training of contrasts and U-Net: the loss falls, the physics moves, checkpoints resume, augmentation is physical."""
from __future__ import annotations

import json
import re
import types

import numpy as np
import pytest

import torch

from SyntheticMRILib.physics.protocols import LEARNABLE_RANGES as BOUNDS
from SyntheticMRILib.training.config import SHIP_BAR, shipping_verdict
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.io.volumes import read_volume
from SyntheticMRILib.training.randomize import MAX_SLICES, ROWS, TISSUE_NAMES, MapRandomizer, tissue_numbers
from SyntheticMRILib.training.segmenter import (VARIANTS, SliceBank, TrainConfig, ValidationSet, _scanner, _training_maps,
                                                build_variant, train_command, train_variant)
from SyntheticMRILib.models.segmenter import CLASS_NAMES, load_model

TINY = dict(steps=4, batch=4, crop=64, channels=(8, 16, 32, 64), num_res_units=1, evaluations=2)


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory):
    """A phantom-style folder (manifest.json) whose one subject is the bundled sample."""
    folder = tmp_path_factory.mktemp("phantoms")
    files = {name: str(path) for name, path in sample_paths().items()}
    (folder / "manifest.json").write_text(json.dumps({"subjects": [{"id": "sample", "files": files}]}))
    return folder


@pytest.fixture(scope="module")
def bank(sample_folder):
    return SliceBank(sample_folder)


def test_a_few_steps_lower_the_loss_and_move_the_physics(bank):
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    config = TrainConfig(**TINY)
    model = build_variant("learned", config)
    start = [p.tr for p in model.contrast.protocols()]
    optimizer = torch.optim.Adam([{"params": model.unet.parameters(), "lr": 3e-3},
                                  {"params": model.contrast.parameters(), "lr": 0.05}])
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    config = TrainConfig(**{**TINY, "batch": 8, "crop": 64, "focus": 1.0})
    t1, t2, pd, scale, target = _training_maps(bank, config, MapRandomizer(), np.random.default_rng(0), model,
                                               torch.device("cpu"))  # one batch, learnt by heart
    losses = []
    for _ in range(25):
        loss = loss_function(model(t1, t2, pd, scale.detach()), target[:, None])
        optimizer.zero_grad()
        loss.backward()
        assert all(raw.grad is not None and torch.all(raw.grad != 0) for raw in model.contrast.raw)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert [p.tr for p in model.contrast.protocols()] != pytest.approx(start)


def test_variants_differ_only_in_their_inputs():
    config = TrainConfig(**TINY)
    models = {name: build_variant(name, config) for name in VARIANTS}
    assert sum(p.numel() for p in models["fixed"].parameters() if p.requires_grad) == \
        sum(p.numel() for p in models["maps"].unet.parameters())
    assert models["maps"].contrast is None
    assert not any(p.requires_grad for p in models["fixed"].contrast.parameters())
    assert all(p.requires_grad for p in models["learned"].contrast.parameters())
    assert models["fixed"].contrast.protocols() == models["learned"].contrast.protocols()
    assert models["random"].contrast.protocols() != models["learned"].contrast.protocols()
    with pytest.raises(InputError, match="unknown variant"):
        build_variant("nope", config)


def test_crops_focus_on_structures_and_bring_their_slab(bank):
    rng = np.random.default_rng(1)
    tissues, focused, weights = bank.sample(32, 64, 1.0, rng)
    _, anywhere, _ = bank.sample(32, 64, 0.0, rng)
    assert all(c.any() for c in focused)  # every focused crop holds a structure
    assert (focused > 0).float().mean() > (anywhere > 0).float().mean()
    assert tissues.shape == (32, MAX_SLICES, 64, 64) and weights.shape == (32, ROWS)
    labels = read_volume(sample_paths()["labels"]).array
    np.testing.assert_array_equal(weights[0].numpy(), np.bincount(tissue_numbers(labels).ravel(), minlength=ROWS))
    # the middle slice of each slab is the labelled one: its putamen voxels are putamen tissue
    putamen = 1 + TISSUE_NAMES.index("putamen")
    left_putamen = 1 + [n for n, name in enumerate(CLASS_NAMES[1:]) if name == "Left-Putamen"][0]
    assert torch.all(tissues[:, MAX_SLICES // 2][focused == left_putamen] == putamen)


def test_scanner_noise_is_absolute_so_a_darker_contrast_is_noisier():
    config = TrainConfig(snr=(100.0, 100.0), bias=0.0, resolution_loss=(1.0, 1.0))
    scanner = _scanner(config, np.random.default_rng(0), maps_input=False)
    bright = torch.full((1, 2, 128, 128), 0.5)
    bright[:, 1] = 0.05  # the same tissue at a tenth of the signal
    noisy = scanner(bright)
    sigma = (noisy - bright).std(dim=(-1, -2)).flatten()
    assert sigma[0] == pytest.approx(0.01, rel=0.1) and sigma[1] == pytest.approx(0.01, rel=0.15)
    snr = bright.mean(dim=(-1, -2)).flatten() / sigma
    assert snr[0] > 8 * snr[1]


@pytest.mark.slow
def test_train_variant_checkpoints_selects_on_val_and_resumes(tmp_path, bank, sample_folder):
    validation = ValidationSet(sample_folder)
    config = TrainConfig(**TINY)
    device = torch.device("cpu")
    history = train_variant("learned", config, bank, validation, tmp_path, device, log=lambda _: None)
    folder = tmp_path / "learned"
    assert [e["step"] for e in history["evaluations"]] == [2, 4]
    assert json.loads((folder / "history.json").read_text())["evaluations"][-1]["step"] == 4
    model = load_model(folder / "best.pt")
    for protocol in model.contrast.protocols():
        assert BOUNDS[protocol.sequence]["tr"][0] <= protocol.tr <= BOUNDS[protocol.sequence]["tr"][1]
    again = train_variant("learned", config, bank, validation, tmp_path, device, log=lambda _: None)
    assert again["evaluations"] == history["evaluations"]  # resumed at the end: nothing retrained
    with pytest.raises(InputError, match="another recipe"):
        train_variant("learned", TrainConfig(**{**TINY, "steps": 6}), bank, validation, tmp_path, device, log=lambda _: None)


def test_train_command_refuses_a_data_folder_without_splits(tmp_path):
    with pytest.raises(InputError, match="syntheticmri phantom --split train"):
        train_command(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_train_command_writes_the_model_card_and_measures_each_model_once(tmp_path, monkeypatch):
    """Variants trained by separate runs (e.g. in parallel) meet in one report; test scores are not measured twice."""
    from SyntheticMRILib.training import segmenter as seg_training
    from SyntheticMRILib.resources import sha256

    files = {name: str(path) for name, path in sample_paths().items()}
    subject = {"id": "sample", "files": files, "anatomy": "cvs_avg35", "field_strength": 3.0}
    manifest = {"seed": 0, "count": 1, "resolution_mm": 1.0, "lesions": "none", "sources": {"sample": {}},
                "subjects": [subject]}
    for split in ("train", "val", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "data" / split / "manifest.json").write_text(json.dumps(manifest))
    measured = []
    evaluate = seg_training.evaluate_folder
    monkeypatch.setattr(seg_training, "evaluate_folder", lambda model, folder, *a, **k: measured.append(model.config["variant"])
                        or evaluate(model, folder, *a, **k))
    config, out, said = TrainConfig(**TINY), tmp_path / "out", []
    train_command(tmp_path / "data", out, ["maps"], config, log=lambda _: None)
    results = train_command(tmp_path / "data", out, ["learned", "maps"], config, log=said.append)
    # a few steps segment nothing: the run must not recommend shipping it
    assert results["learned"]["evaluation"]["test"]["mean_dice"] < SHIP_BAR["mean_dice"]
    assert not any("model to ship" in line for line in said)
    assert any(line.startswith("not for shipping: test mean dice") for line in said)
    assert measured == ["maps"] * 3 + ["learned"] * 3  # test, randomized, stress: once each, maps not again
    assert set(results) == {"learned", "maps"} and 0.0 <= results["maps"]["evaluation"]["test"]["mean_dice"] <= 1.0
    card = (out / "model" / "MODEL_CARD.md").read_text()
    listed = dict(re.findall(r"`([\w./]+\.pt)`[^\n]*sha256 `([0-9a-f]{64})`", card))
    assert set(listed) == {"subcortical.pt", "baselines/maps.pt"}
    for name, digest in listed.items():
        assert sha256(out / "model" / name) == digest == sha256(out / ("learned" if name == "subcortical.pt" else "maps") / "best.pt")
    assert "syntheticmri phantom --split train --count 1 --seed 0 --sources sample -o data/train" in card
    assert "| structure | learned | maps |" in card  # one table, both models


@pytest.mark.slow
def test_a_run_cut_off_midway_resumes_to_the_same_model(tmp_path, bank, sample_folder):
    """Killed after its first checkpoint, a run resumed from it ends bit for bit where an uninterrupted run ends:
    weights, optimizer, schedule and both random streams are restored."""
    validation = ValidationSet(sample_folder)
    config, device = TrainConfig(**TINY), torch.device("cpu")
    train_variant("learned", config, bank, validation, tmp_path / "whole", device, log=lambda _: None)

    class CutOff(Exception):
        pass

    calls = []

    def sample_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) > config.steps // config.evaluations:  # the first checkpoint is written, then the machine dies
            raise CutOff
        return SliceBank.sample(bank, *args, **kwargs)

    cut = types.SimpleNamespace(sample=sample_then_die)
    with pytest.raises(CutOff):
        train_variant("learned", config, cut, validation, tmp_path / "cut", device, log=lambda _: None)
    resumed = train_variant("learned", config, bank, validation, tmp_path / "cut", device, log=lambda _: None)
    assert [e["step"] for e in resumed["evaluations"]] == [2, 4]
    whole = torch.load(tmp_path / "whole" / "learned" / "checkpoint.pt", weights_only=False)["model"]
    again = torch.load(tmp_path / "cut" / "learned" / "checkpoint.pt", weights_only=False)["model"]
    assert whole.keys() == again.keys()
    for key in whole:
        torch.testing.assert_close(again[key], whole[key], rtol=0, atol=0, msg=key)


def test_the_shipping_verdict_names_each_missed_bar():
    assert shipping_verdict({"mean_dice": 0.887, "min_structure_dice": 0.764}) == []
    assert shipping_verdict({"mean_dice": 0.0, "min_structure_dice": 0.0}) == [
        "test mean dice 0.000 < 0.85", "test min structure dice 0.000 < 0.70"]
    assert shipping_verdict({"mean_dice": 0.9, "min_structure_dice": float("nan")}) == ["test min structure dice nan < 0.70"]
