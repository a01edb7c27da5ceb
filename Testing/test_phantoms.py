"""The multi-subject phantom generator: anatomy, variation, maps, splits, files, dataset, report.

Everything runs on the bundled ``sample`` source at 2-3 mm (the whole file takes well
under two minutes on two cores). The fetched sources (``fsaverage``, ``ibsr``) are used
when they are in the cache (``syntheticmri phantom --fetch-sources``) and skipped otherwise.
"""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from SyntheticMRILib.io.labels import STRUCTURES
from SyntheticMRILib.phantoms import dataset, generator, report, sources
from SyntheticMRILib.training.augment import scanner_effects
from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.phantoms.head import HEAD_TISSUE
from SyntheticMRILib.phantoms.manifest import read_manifest
from SyntheticMRILib.physics.tissues import TISSUES
from SyntheticMRILib.io.volumes import read_volume

LEFT_RIGHT = [(STRUCTURES[f"Left-{n}"], STRUCTURES[f"Right-{n}"])
              for n in ("Thalamus", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "Accumbens-area")]

try:
    from SyntheticMRILib.phantoms.lesions import LESION_KINDS
except ImportError:  # written in parallel; the lesion path is tested once it exists
    LESION_KINDS = ()
needs_lesions = pytest.mark.skipif(not LESION_KINDS, reason="SyntheticMRILib.phantoms.lesions is not available yet")


@pytest.fixture(scope="module")
def train():
    """12 training subjects at 2 mm: enough for a coefficient of variation, fast enough for a test."""
    return [generator.generate_subject(spec, 2.0) for spec in generator.plan_split("train", 12, seed=3)]


def centroid_x(subject, label):
    """Mean LPS x (mm; positive = patient's left) of a label's voxels."""
    index = np.argwhere(subject.labels.array == label)
    return subject.labels.origin[0] + index[:, 2].mean() * subject.labels.spacing[0]


# --------------------------------------------------------------------------- anatomy and variation


def test_every_structure_is_present_on_both_sides(train):
    for subject in train:
        present = set(np.unique(subject.labels.array).tolist())
        assert set(STRUCTURES.values()) <= present, subject.spec.id
        assert {2, 3, 4, 41, 42, 43, 7, 8, 16} <= present  # WM, cortex, ventricles, cerebellum, brain stem


def test_structure_volumes_lie_within_adult_norms(train):
    for subject in train:
        volumes = subject.record["volumes_ml"]
        for name in STRUCTURES:
            _mean, _sd, low, high = sources.NORMS_ML[name]
            assert low <= volumes[name] <= high, (subject.spec.id, name, volumes[name], (low, high))
            target = subject.record["targets_ml"][name]  # the warp hits its target (within ~2 % at 1 mm; at 2 mm
            assert abs(volumes[name] - target) <= 0.05 * target + 0.1, (name, volumes[name], target)  # 0.1 ml = 12 voxels)
        low, high = sources.NORMS_ML["BrainSegNotVent"][2:]
        assert low <= volumes["BrainSegNotVent"] <= high


def test_structure_volumes_vary_across_subjects(train):
    for name in STRUCTURES:
        values = np.array([s.record["volumes_ml"][name] for s in train])
        cv = values.std(ddof=1) / values.mean()
        assert cv >= 0.05, (name, cv)
    shapes = {s.labels.array.shape for s in train}
    assert len(shapes) == 1  # one field of view for every subject: slices batch without padding


def test_warps_are_diffeomorphic_and_subjects_differ(train):
    assert all(s.record["min_jacobian"] > 0 for s in train)
    scales = [s.record["scale"] for s in train]
    assert max(scales) - min(scales) > 0.02
    a, b = train[0].labels.array, train[1].labels.array
    assert (a != b).mean() > 0.02


def test_flips_swap_left_and_right_labels(train):
    flips = [s.record["flip"] for s in train]
    assert any(flips) and not all(flips)
    for subject in train:  # left structures carry left labels and lie on the patient's left (LPS +x)
        for left, right in LEFT_RIGHT:
            assert centroid_x(subject, left) > centroid_x(subject, right) + 10, (subject.spec.id, left)
        assert centroid_x(subject, 3) > centroid_x(subject, 42)  # cortex too


def test_swap_table_is_an_involution_on_freesurfer_pairs():
    lut = sources.left_right_swap_lut()
    assert lut[10] == 49 and lut[49] == 10 and lut[2] == 41 and lut[58] == 26 and lut[16] == 16 and lut[257] == 257
    np.testing.assert_array_equal(lut[lut], np.arange(len(lut)))


# --------------------------------------------------------------------------- maps


def test_maps_are_finite_positive_in_the_head_and_zero_outside(train):
    for subject in train[:4]:
        head = subject.labels.array > 0
        for name in ("t1", "t2", "pd"):
            array = getattr(subject, name).array
            assert array.dtype == np.float32 and np.isfinite(array).all()
            assert (array[head] > 0).all() and (array[~head] == 0).all(), name
            assert getattr(subject, name).same_grid(subject.labels)
        assert subject.pd.array.max() <= 1.0
        assert set(np.unique(subject.labels.array[subject.labels.array > 0]).tolist()) <= set(HEAD_TISSUE)


def _check_medians(subject):
    medians = report._tissue_medians({"t1": subject.t1, "t2": subject.t2, "pd": subject.pd, "labels": subject.labels})
    assert {"cortex", "cerebral_wm", "thalamus", "putamen", "pallidum", "csf", "fat", "bone"} <= set(medians)
    for tissue, (t1, t2, _pd) in medians.items():
        row = TISSUES[tissue][subject.spec.field]
        assert row.t1_range[0] <= t1 <= row.t1_range[1], (tissue, subject.spec.field, t1, row.t1_range)
        assert row.t2_range[0] <= t2 <= row.t2_range[1], (tissue, subject.spec.field, t2, row.t2_range)
    return medians


def test_tissue_medians_lie_in_the_literature_ranges_at_3_t(train):
    first, second = (_check_medians(s) for s in train[:2])
    assert first["cortex"] != second["cortex"]  # drawn per subject, not copied from the table
    assert first["putamen"][0] > first["pallidum"][0] and first["cortex"][0] > first["cerebral_wm"][0]


def test_tissue_medians_lie_in_the_literature_ranges_at_1_5_t():
    spec = generator.plan_split("test", 1, seed=9, field=1.5)[0]
    subject = generator.generate_subject(spec, 3.0)
    assert subject.record["field_strength"] == 1.5
    _check_medians(subject)


def test_relaxation_draws_stay_inside_the_table_ranges():
    for n in range(20):
        for field in (1.5, 3.0):
            values = generator.draw_relaxation(np.random.default_rng(n), field)
            for tissue, (t1, t2, pd) in values.items():
                row = TISSUES[tissue][field]
                assert row.t1_range[0] < t1 < row.t1_range[1] and row.t2_range[0] < t2 < row.t2_range[1] and 0 < pd <= 1


def test_generation_is_deterministic_from_the_seed():
    spec = generator.plan_split("val", 1, seed=11)[0]
    a, b = (generator.generate_subject(spec, 3.0) for _ in range(2))
    for name in ("labels", "t1", "t2", "pd"):
        np.testing.assert_array_equal(getattr(a, name).array, getattr(b, name).array)
    assert a.record == b.record
    assert generator.plan_split("val", 1, seed=11) == [spec]


# --------------------------------------------------------------------------- splits and sources


def test_splits_share_no_seed_or_subject():
    specs = [s for split in ("train", "val", "test") for seed in (0, 1) for s in generator.plan_split(split, 40, seed)]
    assert len({s.seed for s in specs}) == len(specs) and len({s.id for s in specs}) == len(specs)
    assert {s.field for s in specs} == {generator.INTERNAL_FIELD}
    assert {s.source for s in specs} == set(generator.INTERNAL_SOURCES)


def test_external_split_uses_another_anatomy_and_field_or_fails_clearly():
    internal = {sources.SOURCES[s].anatomy for s in generator.INTERNAL_SOURCES}
    if not sources.source_available("ibsr"):
        with pytest.raises(InputError, match="--fetch-sources ibsr"):
            generator.plan_split("external", 2)
        pytest.skip("ibsr is not fetched: the external split fails with the fetch command, as it should")
    specs = generator.plan_split("external", 2, seed=0)
    assert all(s.source == "ibsr" and sources.SOURCES[s.source].anatomy not in internal for s in specs)
    assert all(s.field == generator.EXTERNAL_FIELD != generator.INTERNAL_FIELD for s in specs)
    assert not sources.SOURCES["ibsr"].shippable
    internal_seeds = {s.seed for split in ("train", "val", "test") for s in generator.plan_split(split, 10, 0)}
    assert not internal_seeds & {s.seed for s in specs}
    subject = generator.generate_subject(specs[0], 3.0)
    assert set(STRUCTURES.values()) <= set(np.unique(subject.labels.array).tolist())
    _check_medians(subject)


def test_external_anatomy_and_field_are_kept_out_of_training():
    with pytest.raises(InputError, match="external anatomy"):
        generator.plan_split("train", 1, sources=["ibsr"])
    with pytest.raises(InputError, match="field strength"):
        generator.plan_split("external", 1, field=3.0)
    with pytest.raises(InputError, match="always uses"):
        generator.plan_split("external", 1, sources=["sample"])


def test_a_missing_source_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHETICMRI_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="syntheticmri phantom --fetch-sources fsaverage"):
        generator.plan_split("train", 1, sources=["sample", "fsaverage"])
    with pytest.raises(InputError, match="--fetch-sources fsaverage"):
        sources.load_source.__wrapped__("fsaverage")
    with pytest.raises(InputError, match="unknown anatomy source"):
        generator.plan_split("train", 1, sources=["nope"])


def test_every_source_is_pinned_and_says_whether_it_may_ship():
    for source in sources.SOURCES.values():
        assert source.licence
        if source.package:
            assert "==" in source.package and len(source.sha256) == 64
    assert [s.name for s in sources.SOURCES.values() if not s.shippable] == ["ibsr"]


@pytest.mark.parametrize("name", ["fsaverage", "cvs_avg35", "ibsr"])
def test_fetched_sources_load_in_mni_like_space(name):
    if not sources.source_available(name):
        pytest.skip(f"{name} not fetched (syntheticmri phantom --fetch-sources {name})")
    anatomy = sources.load_source(name)
    left = anatomy.points["Left-Thalamus"].mean(axis=0)
    right = anatomy.points["Right-Thalamus"].mean(axis=0)
    assert 5 < left[0] < 20 and -20 < right[0] < -5  # LPS: left thalamus at x ~ +12 mm in MNI space
    assert 5 < left[1] < 30 and -5 < left[2] < 15


def test_read_mgh_places_voxels_like_freesurfer(tmp_path):
    dims, spacing = (4, 5, 6), (1.0, 1.5, 2.0)
    cosines = np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns i, j, k in RAS (LIA)
    centre = np.array([3.0, -7.0, 11.0])
    data = np.arange(np.prod(dims), dtype=">i2").reshape(dims[::-1])
    header = struct.pack(">7i", 1, *dims, 1, 4, 0) + struct.pack(">h", 1) + struct.pack(">3f", *spacing)
    header += struct.pack(">9f", *cosines.T.ravel()) + struct.pack(">3f", *centre)
    path = tmp_path / "x.mgz"
    path.write_bytes(gzip.compress(header + b"\0" * (284 - len(header)) + data.tobytes()))
    volume = sources.read_mgh(path)
    np.testing.assert_array_equal(volume.array, data.astype(np.int16))
    ras = volume.ijk_to_ras()
    for ijk in [(0, 0, 0), (3, 1, 5), (2, 2.5, 3)]:  # FreeSurfer: RAS = Mdc * D * (ijk - dims / 2) + c_ras
        expected = cosines @ (np.array(spacing) * (np.array(ijk) - np.array(dims) / 2)) + centre
        np.testing.assert_allclose(ras[:3, :3] @ ijk + ras[:3, 3], expected, atol=1e-5)


# --------------------------------------------------------------------------- command line, files, dataset, report


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "val"
    argv = ["phantom", "--split", "val", "--count", "2", "--seed", "4", "-o", str(out), "--resolution", "3"]
    if LESION_KINDS:
        argv += ["--lesions", LESION_KINDS[0]]
    assert main(argv) == 0
    return out, argv


def test_cli_writes_subjects_and_a_manifest_that_matches_them(written):
    out, _ = written
    manifest = read_manifest(out)
    assert manifest["split"] == "val" and len(manifest["subjects"]) == 2
    assert manifest["units"]["t1"] == "ms" and "sample" in manifest["sources"]
    for record in manifest["subjects"]:
        assert {"t1", "t2", "pd", "labels"} <= set(record["files"])
        labels = read_volume(out / record["files"]["labels"])
        assert record["volumes_ml"] == sources.structure_volumes(labels.array, labels.spacing)
        assert record["shape"] == list(labels.array.shape) and record["field_strength"] == 3.0
        for name in ("t1", "t2", "pd"):
            assert read_volume(out / record["files"][name]).same_grid(labels)
        if LESION_KINDS:
            assert record["lesion"] == LESION_KINDS[0] and "lesions" in record["files"]
        assert {"id", "split", "source", "seed", "flip", "lesion", "relaxation"} <= set(record)


def test_cli_refuses_to_overwrite(written, capsys):
    out, argv = written
    before = (out / "manifest.json").stat().st_mtime_ns
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "manifest.json").stat().st_mtime_ns == before


def test_cli_external_without_its_source_fails_with_the_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNTHETICMRI_CACHE", str(tmp_path / "empty"))
    assert main(["phantom", "--split", "external", "--count", "1", "-o", str(tmp_path / "ext")]) == 2
    assert "--fetch-sources ibsr" in capsys.readouterr().err
    assert not (tmp_path / "ext").exists()


def test_dataset_serves_slices_from_a_folder_and_from_the_generator(written):
    out, _ = written
    folder = dataset.PhantomSlices(out)
    item = folder[len(folder) // 2]
    labels = read_volume(out / f"{item['subject']}/labels.nrrd")
    nk, nj, ni = labels.array.shape
    assert item["t1"].shape == item["t2"].shape == item["pd"].shape == item["labels"].shape == (nj, ni)
    assert item["t1"].dtype == torch.float32 and item["labels"].dtype == torch.long
    assert all((folder[n]["labels"] > 0).any() for n in range(0, len(folder), 7))  # empty slices skipped
    np.testing.assert_array_equal(item["labels"].numpy(), labels.array[item["slice"]])
    corner = labels.ijk_to_ras() @ np.array([3, 2, item["slice"], 1.0])  # pixel (row 2, column 3)
    np.testing.assert_allclose(item["slice_to_ras"].numpy() @ np.array([3, 2, 0, 1.0]), corner)
    batch = next(iter(torch.utils.data.DataLoader(folder, batch_size=3, sampler=folder.grouped_order(0))))
    assert batch["t1"].shape == (3, nj, ni) and len(batch["subject"]) == 3

    generated = dataset.PhantomSlices(split="val", count=2, seed=4, resolution=3.0,
                                       lesions=LESION_KINDS[0] if LESION_KINDS else "none")
    same = next(n for n, (s, z) in enumerate(generated.index) if s == 0 and z == nk // 2)
    mine = generated[same]
    theirs = next(folder[n] for n, (s, z) in enumerate(folder.index) if s == 0 and z == mine["slice"])
    for key in ("t1", "t2", "pd", "labels", "lesions"):
        torch.testing.assert_close(mine[key], theirs[key])
    sagittal = dataset.PhantomSlices(out, axis="sagittal")[0]
    assert sagittal["labels"].shape == (nk, nj)


def test_report_tables_and_montage(written):
    out, _ = written
    assert main(["phantom", "--report", str(out)]) == 0
    text = (out / "report.md").read_text()
    for name in STRUCTURES:
        assert f"| {name} |" in text
    assert "| cortex | 3 T |" in text and (out / "report.png").stat().st_size > 10_000


@needs_lesions
def test_lesions_change_the_maps_inside_their_mask(written):
    out, _ = written
    record = read_manifest(out)["subjects"][0]
    mask = read_volume(out / record["files"]["lesions"]).array
    assert mask.any() and record["lesion_ml"] > 0
    plain = generator.generate_subject(generator.plan_split("val", 1, seed=4)[0], 3.0)  # the same subject, no lesion
    t2 = read_volume(out / record["files"]["t2"]).array
    assert (t2[mask > 0] != plain.t2.array[mask > 0]).mean() > 0.5
    np.testing.assert_array_equal(plain.labels.array, read_volume(out / record["files"]["labels"]).array)


# --------------------------------------------------------------------------- scanner effects


def test_scanner_effects_noise_bias_and_blur():
    image = torch.zeros(4, 64, 64)
    image[:, 8:56, 8:56] = 100.0
    noisy = scanner_effects(image, torch.Generator().manual_seed(0), snr=20, bias=0)
    again = scanner_effects(image, torch.Generator().manual_seed(0), snr=20, bias=0)
    torch.testing.assert_close(noisy, again)
    assert noisy.shape == image.shape and (noisy >= 0).all()
    inside = noisy[:, 16:48, 16:48]
    assert abs(inside.std().item() - 5.0) < 0.5 and abs(inside.mean().item() - 100) < 1.5
    assert 2.0 < noisy[:, :4, :4].mean().item() < 8.0  # Rician floor in the background: sigma * sqrt(pi / 2)
    biased = scanner_effects(image, torch.Generator().manual_seed(1), snr=None, bias=0.2)
    ratio = (biased / image.clamp(min=1))[:, 8:56, 8:56].log()
    assert 0.05 < ratio.std().item() < 0.5 and ratio.diff(dim=-1).abs().max() < 0.05  # smooth
    blurred = scanner_effects(image, snr=None, bias=0, resolution_loss=4)
    assert 0 < blurred[0, 32, 6].item() < 100 and abs(blurred[0, 32, 32].item() - 100) < 1e-3
    volume = torch.full((1, 8, 16, 16), 50.0, requires_grad=True)
    out = scanner_effects(volume, torch.Generator().manual_seed(2), snr=10, bias=0.1, resolution_loss=2, spatial_dims=3)
    out.sum().backward()
    assert torch.isfinite(volume.grad).all() and volume.grad.abs().sum() > 0
