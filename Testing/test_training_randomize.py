"""Domain randomization of the segmenter's training maps: draws inside their documented ranges, rendering that
keeps the table's values where nothing blurs them, and one normalization for training and inference."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import load_maps
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.models.segmenter import volume_scale
from SyntheticMRILib.physics.protocols import preset
from SyntheticMRILib.physics.tissues import relaxation
from SyntheticMRILib.training.config import TrainConfig
from SyntheticMRILib.training.randomize import (ROWS, TISSUE_NAMES, MapRandomizer, Randomization, tissue_numbers,
                                                volume_weights)
from SyntheticMRILib.training.segmenter import build_variant

N = len(TISSUE_NAMES)
STILL = Randomization(subject_t1=(1, 1), subject_t2=(1, 1), subject_pd=(1, 1), tissue_t1=(1, 1), tissue_t2=(1, 1),
                      tissue_pd=(1, 1), field_sd=(0, 0), texture_sd=(0, 0), noise=(0, 0), pv_sigma_mm=(0.01, 0.01),
                      in_plane_mm=(1, 1), slice_mm=(1, 1), brain_only=0.0, fields=(3.0,))


def _typical(field: float) -> np.ndarray:
    return np.array([[relaxation(n, field).t1, relaxation(n, field).t2, relaxation(n, field).pd] for n in TISSUE_NAMES])


def test_draws_stay_inside_their_documented_ranges():
    r = replace(Randomization(), fields=(3.0,))  # one field: each ratio to the table is unambiguous
    values = MapRandomizer(r).values(400, torch.Generator().manual_seed(0)).numpy()
    assert values.shape == (400, ROWS, 3) and np.all(values[:, 0] == 0)
    ratios = values[:, 1:1 + N] / _typical(3.0)
    for c, (subject, tissue) in enumerate(((r.subject_t1, r.tissue_t1), (r.subject_t2, r.tissue_t2))):
        low, high = subject[0] * tissue[0], subject[1] * tissue[1]
        free = ratios[..., c][values[:, 1:1 + N, 1] < values[:, 1:1 + N, 0]] if c == 1 else ratios[..., c]
        assert free.min() >= low * (1 - 1e-9) and free.max() <= high * (1 + 1e-9)
        assert free.min() < low * 1.1 and free.max() > high / 1.1  # the whole range is used
    pd = ratios[..., 2][values[:, 1:1 + N, 2] < 1.0]  # PD is capped at 1 (water)
    assert pd.min() >= r.subject_pd[0] * r.tissue_pd[0] - 1e-9 and pd.max() <= r.subject_pd[1] * r.tissue_pd[1] + 1e-9
    assert values[..., 2].max() <= 1.0
    assert np.all(values[:, 1:, 1] <= values[:, 1:, 0])  # T2 <= T1, always
    stripped = (values[:, 1 + N:, 2] == 0).all(1)
    assert 0.15 < stripped.mean() < 0.35  # brain_only: a quarter of the draws lose the head layers
    assert np.all(values[:, 1:1 + N, 2] > 0)  # and none loses brain tissue
    both = MapRandomizer().values(100, torch.Generator().manual_seed(0)).numpy()[:, 1 + TISSUE_NAMES.index("csf"), 0]
    assert both.min() < relaxation("csf", 1.5).t1 < relaxation("csf", 3.0).t1 < both.max()


def test_a_stress_draw_lies_outside_the_training_ranges_by_the_given_share():
    r = replace(Randomization(), tissue_t1=(1.0, 1.0), fields=(3.0,))
    values = MapRandomizer(r.stressed(0.1)).values(100, torch.Generator().manual_seed(1)).numpy()
    ratios = np.unique(np.round(values[:, 1:1 + N, 0] / _typical(3.0)[:, 0], 6))
    np.testing.assert_allclose(ratios, [r.subject_t1[0] / 1.1, r.subject_t1[1] * 1.1], rtol=1e-6)
    assert r.stressed().noise == (0.0, 2 * r.noise[1])


def _two_tissue_labels() -> np.ndarray:
    labels = np.zeros((9, 40, 40), np.uint16)
    labels[:, 5:35, 5:35] = 2  # cerebral white matter
    labels[:, 15:25, 15:25] = 12  # putamen
    labels[:, 5:35, 2:5] = 118  # skin: a head layer, outside the brain
    return labels


def test_rendering_without_randomness_gives_the_table_values_in_tissue_interiors():
    labels = _two_tissue_labels()
    numbers = torch.from_numpy(tissue_numbers(labels))[None]
    g = torch.Generator().manual_seed(0)
    randomizer = MapRandomizer(STILL)
    t1, t2, pd = (m[0].numpy() for m in randomizer.render(numbers, randomizer.values(1, g), g))
    wm, putamen = relaxation("cerebral_wm", 3.0), relaxation("putamen", 3.0)
    np.testing.assert_allclose([t1[4, 10, 10], t2[4, 10, 10], pd[4, 10, 10]], [wm.t1, wm.t2, wm.pd], rtol=1e-5)
    np.testing.assert_allclose([t1[4, 20, 20], t2[4, 20, 20], pd[4, 20, 20]], [putamen.t1, putamen.t2, putamen.pd], rtol=1e-5)
    assert t1[4, 0, 0] == t2[4, 0, 0] == pd[4, 0, 0] == 0  # background stays exactly 0


def test_thick_slices_partial_volume_and_skull_stripping():
    labels = _two_tissue_labels()
    labels[:4, 15:25, 15:25] = 2  # the putamen only in slices 4-8: a boundary along k
    numbers = torch.from_numpy(tissue_numbers(labels))[None]
    g = torch.Generator().manual_seed(0)
    thick = MapRandomizer(replace(STILL, slice_mm=(3, 3)))
    t1 = thick.render(numbers, thick.values(1, g), g)[0][0].numpy()
    wm, putamen = relaxation("cerebral_wm", 3.0).t1, relaxation("putamen", 3.0).t1
    mixed = 3 / (2 / putamen + 1 / wm)  # slice 4 averages slices 3 (WM), 4 and 5 (putamen) in R1
    assert t1[4, 20, 20] == pytest.approx(mixed, rel=1e-4) and t1[6, 20, 20] == pytest.approx(putamen, rel=1e-4)
    stripped = MapRandomizer(replace(STILL, brain_only=1.0))
    maps = stripped.render(numbers, stripped.values(1, g), g)
    assert float(maps[2][0, 4, 20, 3]) == 0 and float(maps[2][0, 4, 20, 10]) > 0  # skin gone, brain kept


def test_draws_are_reproducible_and_labels_without_a_tissue_are_refused():
    numbers = torch.from_numpy(tissue_numbers(_two_tissue_labels()))[None]
    randomizer = MapRandomizer()
    one, two = ([m.numpy() for m in randomizer.render(numbers, randomizer.values(1, g), g)]
                for g in (torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="labels without a tissue: \\[9999\\]"):
        tissue_numbers(np.array([[[0, 2, 9999]]]))


@pytest.mark.parametrize("variant", ["learned", "maps"])
def test_training_and_inference_normalize_by_the_same_volume_scale(variant):
    """Training knows a volume as tissue values and voxel counts; inference sees its voxels. For the same volume
    (unblurred) both give the same scale, and it is the head mean of the synthesized image (computed here apart)."""
    labels = _two_tissue_labels()
    numbers = tissue_numbers(labels)
    g = torch.Generator().manual_seed(3)
    values = MapRandomizer().values(1, g).to(torch.float32)
    maps = [values[0, :, c][torch.from_numpy(numbers).long()] for c in range(3)]  # the volume, by lookup
    model = build_variant(variant, TrainConfig(channels=(8, 16), num_res_units=0))
    with torch.no_grad():
        training = model.scale(values[..., 0], values[..., 1], values[..., 2], torch.from_numpy(volume_weights(numbers))[None])
        inference = volume_scale(model, *maps, stride=1)
    torch.testing.assert_close(training, inference, rtol=1e-5, atol=0)
    head = maps[2] > 0
    if variant == "learned":
        from SyntheticMRILib.physics.synthesis import synthesize

        expected = synthesize(maps[0][head], maps[1][head], maps[2][head], preset("T1w").protocol).abs().mean()
        assert float(inference[0, 0]) == pytest.approx(float(expected), rel=1e-5)
    else:
        assert float(inference[0, 1]) == pytest.approx(float(maps[1][head].mean() / 100.0), rel=1e-5)


def test_the_volume_normalization_removes_the_intensity_scale_and_old_models_are_refused(tmp_path):
    """A receive gain multiplies PD (and so every contrast): the U-Net's input does not change. A model file saved
    before the per-volume normalization is refused rather than fed inputs it never saw."""
    from SyntheticMRILib.models.segmenter import load_model, save_model

    numbers = tissue_numbers(_two_tissue_labels())
    g = torch.Generator().manual_seed(4)
    t1, t2, pd = (m[0] for m in MapRandomizer().render(torch.from_numpy(numbers)[None], MapRandomizer().values(1, g), g))
    model = build_variant("fixed", TrainConfig(channels=(8, 16), num_res_units=0))
    with torch.no_grad():
        one = model.images(t1, t2, pd, volume_scale(model, t1, t2, pd, stride=1))
        other = model.images(t1, t2, pd * 37.0, volume_scale(model, t1, t2, pd * 37.0, stride=1))
    torch.testing.assert_close(one, other, rtol=1e-4, atol=1e-5)
    per_channel = (one.abs() * (pd > 0)[:, None]).sum(dim=(0, 2, 3)) / (pd > 0).sum()  # the head mean is 1
    torch.testing.assert_close(per_channel, torch.ones(3), rtol=1e-4, atol=1e-5)
    sample = load_maps(*(sample_paths()[n] for n in ("t1", "t2", "pd"))).tensors()
    with torch.no_grad():  # inference's subsample of the head gives the same means as every voxel
        torch.testing.assert_close(volume_scale(model, *sample), volume_scale(model, *sample, stride=1), rtol=2e-3, atol=0)
    old = dict(model.config)
    del old["normalization"]
    torch.save({"config": old, "state_dict": model.state_dict(), "extra": {}}, tmp_path / "old.pt")
    with pytest.raises(InputError, match="trained before the per-volume normalization"):
        load_model(tmp_path / "old.pt")
    assert load_model(save_model(model, tmp_path / "new.pt")).config["normalization"] == "volume"
