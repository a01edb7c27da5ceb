"""The bundled sample head phantom, and the phantom library it is built with.

The first half checks the shipped files in ``Resources/SampleData`` (grid, labels,
per-tissue values against the tissue table, partial volume, size). The second half
tests :mod:`SyntheticMRILib.phantoms.head` on tiny synthetic label maps.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from SyntheticMRILib.phantoms import head
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import prepare_maps
from SyntheticMRILib.physics.tissues import relaxation
from SyntheticMRILib.io.volumes import Volume, read_volume

from conftest import oblique_left_handed_direction

SAMPLE = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
FILES = ("t1", "t2", "pd", "labels")
SUBCORTICAL = (10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58)


# --------------------------------------------------------------------------- helpers


def interior(index: np.ndarray) -> np.ndarray:
    """Voxels whose 26 neighbours all have the same value (no boundary within one voxel)."""
    k, j, i = index.shape
    centre = index[1:-1, 1:-1, 1:-1]
    same = np.ones(centre.shape, dtype=bool)
    for a, b, c in itertools.product((0, 1, 2), repeat=3):
        same &= index[a:a + k - 2, b:b + j - 2, c:c + i - 2] == centre
    out = np.zeros(index.shape, dtype=bool)
    out[1:-1, 1:-1, 1:-1] = same
    return out


def touches(mask: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour in ``mask``."""
    out = np.zeros_like(mask)
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


# --------------------------------------------------------------------------- shipped sample


@pytest.fixture(scope="module")
def sample():
    missing = [name for name in FILES if not (SAMPLE / f"{name}.nrrd").is_file()]
    assert not missing, f"sample files missing: {missing}; run python Resources/SampleData/build_sample.py"
    volumes = {name: read_volume(SAMPLE / f"{name}.nrrd") for name in FILES}
    index, names = head.tissue_index(volumes["labels"].array)
    return volumes, index, names


def test_sample_files_share_one_1mm_grid(sample):
    volumes, _, _ = sample
    labels = volumes["labels"]
    for name in FILES:
        assert volumes[name].same_grid(labels, tolerance=1e-9), name
    np.testing.assert_allclose(labels.spacing, (1.0, 1.0, 1.0), atol=1e-9)
    np.testing.assert_allclose(np.reshape(labels.direction, (3, 3)), np.eye(3), atol=1e-9)
    assert volumes["t1"].array.dtype == np.uint16 and volumes["t2"].array.dtype == np.uint16
    assert volumes["pd"].array.dtype == np.float32 and volumes["labels"].array.dtype == np.uint16
    # the loader reads PD as a fraction (no percent rescaling)
    maps = prepare_maps(volumes["t1"], volumes["t2"], volumes["pd"])
    assert maps.notes == ()


def test_sample_has_subcortical_structures_and_head_labels(sample):
    volumes, _, _ = sample
    labels, counts = np.unique(volumes["labels"].array, return_counts=True)
    count = dict(zip(labels.tolist(), counts.tolist()))
    for label in SUBCORTICAL:
        assert count.get(label, 0) > 500, f"label {label}: {count.get(label, 0)} voxels"
    for label in head.HEAD_LABEL_NAMES:
        assert count.get(label, 0) > 10000, f"head label {label}"
    assert count.get(3, 0) > 100000 and count.get(42, 0) > 100000  # cortex
    assert not any(1000 <= v < 3000 for v in count)  # parcels merged


def test_sample_tissue_medians_within_table_ranges(sample):
    volumes, index, names = sample
    deep = interior(index)
    checked = []
    for number, name in enumerate(names, start=1):
        voxels = deep & (index == number)
        if np.count_nonzero(voxels) < 3:
            continue
        row = relaxation(name, 3.0)
        t1 = float(np.median(volumes["t1"].array[voxels]))
        t2 = float(np.median(volumes["t2"].array[voxels]))
        pd = float(np.median(volumes["pd"].array[voxels]))
        assert row.t1_range[0] <= t1 <= row.t1_range[1], (name, t1, row.t1_range)
        assert row.t2_range[0] <= t2 <= row.t2_range[1], (name, t2, row.t2_range)
        assert abs(pd - row.pd) <= 0.05 * row.pd + 1e-3, (name, pd, row.pd)
        checked.append(name)
    for name in ("cerebral_wm", "cortex", "csf", "thalamus", "caudate", "putamen", "pallidum", "hippocampus",
                 "amygdala", "accumbens", "bone", "fat", "muscle"):
        assert name in checked, name


def test_sample_maps_positive_inside_zero_outside(sample):
    volumes, _, _ = sample
    in_head = volumes["labels"].array > 0
    for name in ("t1", "t2", "pd"):
        array = volumes[name].array
        assert np.all(array[in_head] > 0), name
        assert np.all(array[~in_head] == 0), name
    assert np.count_nonzero(~in_head) > 0.3 * in_head.size  # there is background around the head
    pd = volumes["pd"].array
    assert pd.max() <= 1.0
    np.testing.assert_array_equal(pd, np.round(pd.astype(np.float64), 3).astype(np.float32))


def test_sample_has_partial_volume_at_wm_cortex_boundary(sample):
    volumes, index, names = sample
    wm = index == names.index("cerebral_wm") + 1
    cortex = index == names.index("cortex") + 1
    boundary = (wm & touches(cortex)) | (cortex & touches(wm))
    t1 = volumes["t1"].array.astype(float)
    lo, hi = relaxation("cerebral_wm", 3.0).t1, relaxation("cortex", 3.0).t1
    # strictly between the two tissues, beyond what the few-% smooth variation gives
    between = (t1 > lo * 1.05) & (t1 < hi * 0.95)
    assert np.count_nonzero(boundary) > 100000
    assert np.mean(between[boundary]) > 0.4
    deep = interior(index) & (wm | cortex)
    assert np.mean(between[deep]) < 0.05


def test_sample_total_size_under_15_mb():
    total = sum((SAMPLE / f"{name}.nrrd").stat().st_size for name in FILES)
    assert total < 15e6, total
    assert (SAMPLE / "LICENSE.FreeSurfer.txt").is_file()


# --------------------------------------------------------------------------- library, tiny phantoms


def tiny_brain(shape=(28, 30, 26), spacing=(1.0, 1.2, 0.9), direction=None) -> Volume:
    """A ball of WM (2) in a cortex shell (3) with a small ventricle (4), on a small grid."""
    k, j, i = np.indices(shape, dtype=float)
    step = spacing[::-1]
    centre = [(n - 1) / 2 for n in shape]
    r = np.sqrt(sum(((a - c) * s) ** 2 for a, c, s in zip((k, j, i), centre, step)))
    labels = np.zeros(shape, np.uint16)
    labels[r <= 10] = 3
    labels[r <= 7.5] = 2
    labels[r <= 2] = 4
    direction = tuple(np.eye(3).ravel()) if direction is None else direction
    return Volume(labels, spacing, (10.0, -20.0, 5.5), direction)


def test_pad_and_crop_keep_physical_positions():
    volume = tiny_brain(direction=oblique_left_handed_direction())
    volume = volume.with_array(np.arange(volume.array.size, dtype=np.int32).reshape(volume.array.shape))
    padded = head.pad_volume(volume, (2, 0, 3), (1, 4, 0), value=-1)
    assert padded.array.shape == tuple(n + a + b for n, a, b in zip(volume.array.shape, (2, 0, 3), (1, 4, 0)))
    original, moved = volume.to_image(), padded.to_image()
    for kji in [(0, 0, 0), (5, 7, 9), (27, 29, 25)]:
        ijk = kji[::-1]
        ijk_padded = (ijk[0] + 3, ijk[1] + 0, ijk[2] + 2)
        np.testing.assert_allclose(moved.TransformIndexToPhysicalPoint(ijk_padded),
                                   original.TransformIndexToPhysicalPoint(ijk), atol=1e-9)
        assert padded.array[kji[0] + 2, kji[1], kji[2] + 3] == volume.array[kji]
    back = head.crop_volume(padded, (slice(2, 2 + 28), slice(0, 30), slice(3, 3 + 26)))
    assert back.same_grid(volume, tolerance=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)


def test_crop_to_foreground_margin_and_geometry():
    volume = tiny_brain(direction=oblique_left_handed_direction())
    cropped = head.crop_to_foreground(volume, margin_mm=1.5)
    box = head.foreground_box(volume.array, volume.spacing, 1.5)
    # margin: ceil(1.5 / spacing) voxels on each array axis (k: 0.9 mm, j: 1.2 mm, i: 1.0 mm), within the array
    nz = np.argwhere(volume.array > 0)
    for axis, (step, piece) in enumerate(zip(volume.spacing[::-1], box)):
        margin = int(np.ceil(1.5 / step))
        assert piece.start == max(0, nz[:, axis].min() - margin)
        assert piece.stop == min(volume.array.shape[axis], nz[:, axis].max() + 1 + margin)
    image, small = volume.to_image(), cropped.to_image()
    start = [piece.start for piece in box]
    for kji in [tuple(nz[0]), tuple(nz[-1])]:
        local = tuple(int(a - s) for a, s in zip(kji, start))
        assert cropped.array[local] == volume.array[kji]
        np.testing.assert_allclose(small.TransformIndexToPhysicalPoint(local[::-1]),
                                   image.TransformIndexToPhysicalPoint(tuple(int(v) for v in kji[::-1])), atol=1e-9)
    with pytest.raises(InputError):
        head.foreground_box(np.zeros((3, 3, 3)))


def test_aparc_to_aseg():
    labels = np.array([0, 2, 1001, 1035, 2001, 2035, 17, 11101, 12175, 3000], dtype=np.int32)
    np.testing.assert_array_equal(head.aparc_to_aseg(labels), [0, 2, 3, 3, 42, 42, 17, 3, 42, 3000])
    assert head.aparc_to_aseg(labels.astype(np.float32)).dtype == np.int32


def test_head_layers_nest_in_order():
    brain = tiny_brain()
    layered = head.add_head_layers(brain, seed=3, open_inferior=False)
    assert layered.array.dtype == np.uint16
    values, counts = np.unique(layered.array, return_counts=True)
    count = dict(zip(values.tolist(), counts.tolist()))
    for label in (2, 3, 4):  # brain voxels keep their labels
        assert count[label] == np.count_nonzero(brain.array == label)
    for label in (head.CSF_EXTRACEREBRAL, head.SKULL, head.MUSCLE, head.ADIPOSE, head.SKIN):
        assert count.get(label, 0) > 0, label
    # along rays from the centre outward the layers come in anatomical order and end in air
    # (skull and diploe count as one layer here: a ray may graze the table/diploe boundary)
    order = [4, 2, 3, head.CSF_EXTRACEREBRAL, head.SKULL, head.MUSCLE, head.ADIPOSE, head.SKIN, 0]
    image = layered.to_image()
    centre = np.array(brain.to_image().TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in brain.array.shape[::-1]]))
    rng = np.random.default_rng(0)
    for _ in range(40):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        seen = []
        for radius in np.arange(0, 40, 0.25):
            index = image.TransformPhysicalPointToIndex(tuple(centre + radius * direction))
            if not all(0 <= a < n for a, n in zip(index, image.GetSize())):
                break
            value = int(layered.array[index[::-1]])
            seen.append(order.index(head.SKULL if value == head.DIPLOE else value))
        assert seen[-1] == order.index(0) and order.index(head.SKIN) in seen, seen
        assert seen == sorted(seen), seen
    # diploe lies between the tables: never next to CSF or scalp
    diploe = layered.array == head.DIPLOE
    assert np.count_nonzero(diploe) > 0
    near = touches(diploe)
    assert not np.any(near & np.isin(layered.array, (head.CSF_EXTRACEREBRAL, head.MUSCLE, 0)))


def test_head_layers_open_inferior_ends_at_lowest_brain_slice():
    brain = tiny_brain()  # identity direction: array axis 0 (k) runs inferior -> superior
    lowest = int(np.argwhere(brain.array > 0)[:, 0].min())
    layered = head.add_head_layers(brain, seed=1, open_inferior=True)
    image = layered.to_image()
    # the head's first slice is the brain's lowest slice, at the same height
    assert np.any(layered.array[0] > 0) and np.any(np.isin(layered.array[0], (2, 3, 4)))
    z_head = image.TransformIndexToPhysicalPoint((0, 0, 0))[2]
    z_brain = brain.to_image().TransformIndexToPhysicalPoint((0, 0, lowest))[2]
    assert z_head == pytest.approx(z_brain)
    closed = head.add_head_layers(brain, seed=1, open_inferior=False)
    assert not np.any(closed.array[0])  # wrapped: air below the scalp
    assert np.count_nonzero(closed.array == head.SKULL) > np.count_nonzero(layered.array == head.SKULL)


def test_partial_volume_mixes_rates_and_pd_by_one_fraction():
    index = np.zeros((6, 8, 12), dtype=np.uint8)
    index[:, :, 1:6] = 1
    index[:, :, 6:11] = 2
    values = [(850.0, 75.0, 0.69), (1350.0, 95.0, 0.80)]
    t1, t2, pd = head.mix_partial_volume(index, (1.0, 1.0, 1.0), values, sigma_mm=0.5)
    # background exactly 0, tissue away from boundaries exact
    for array in (t1, t2, pd):
        assert np.all(array[index == 0] == 0)
    assert np.allclose(t1[:, :, 3], 850, rtol=1e-5) and np.allclose(t2[:, :, 8], 95, rtol=1e-5)
    # at the boundary: one fraction f of tissue 1 explains R1, R2 and PD alike
    f1 = (1 / t1[:, :, 5:7] - 1 / 1350) / (1 / 850 - 1 / 1350)
    f2 = (1 / t2[:, :, 5:7] - 1 / 95) / (1 / 75 - 1 / 95)
    f3 = (pd[:, :, 5:7] - 0.80) / (0.69 - 0.80)
    np.testing.assert_allclose(f1, f2, atol=1e-4)
    np.testing.assert_allclose(f1, f3, atol=1e-4)
    assert np.all((f1[:, :, 0] > 0.5) & (f1[:, :, 0] < 1)) and np.all((f1[:, :, 1] > 0) & (f1[:, :, 1] < 0.5))
    assert np.all((t1[:, :, 5] > 850) & (t1[:, :, 5] < 1350)) and np.all((t1[:, :, 6] > 850) & (t1[:, :, 6] < 1350))
    np.testing.assert_allclose(f1[:, :, 0] + f1[:, :, 1], 1.0, atol=1e-4)  # the two sides share the boundary
    # at the air surface PD drops, relaxation times do not
    assert np.all(pd[:, :, 1] < 0.69) and np.allclose(t1[:, :, 1], 850, rtol=1e-5)


def test_tissue_maps_background_zero_and_deterministic():
    layered = head.add_head_layers(tiny_brain(), seed=7, open_inferior=False)
    maps = head.tissue_maps(layered, 3.0, seed=7)
    again = head.tissue_maps(layered, 3.0, seed=7)
    other = head.tissue_maps(layered, 3.0, seed=8)
    inside = layered.array > 0
    for volume, same, different in zip(maps, again, other):
        assert volume.same_grid(layered)
        assert volume.array.dtype == np.float32
        assert np.all(volume.array[~inside] == 0) and np.all(volume.array[inside] > 0)
        np.testing.assert_array_equal(volume.array, same.array)
        assert not np.array_equal(volume.array, different.array)
    low = head.tissue_maps(layered, 1.5, seed=7)[0].array
    assert np.median(low[layered.array == 2]) < np.median(maps[0].array[layered.array == 2])  # T1 shorter at 1.5 T
    np.testing.assert_array_equal(head.add_head_layers(tiny_brain(), seed=7, open_inferior=False).array, layered.array)
    assert not np.array_equal(head.add_head_layers(tiny_brain(), seed=9, open_inferior=False).array, layered.array)


def test_smooth_random_field_is_seeded_smooth_and_crop_consistent():
    grid = Volume(np.zeros((40, 50, 60), np.float32), (1.0, 1.5, 2.0), (3.0, -7.0, 11.0), oblique_left_handed_direction())
    field = head.smooth_random_field(grid, seed=5, wavelength_mm=30.0)
    np.testing.assert_array_equal(field, head.smooth_random_field(grid, seed=5, wavelength_mm=30.0))
    assert abs(float(field.mean())) < 0.5 and 0.4 < float(field.std()) < 1.6
    assert float(np.abs(np.diff(field, axis=2)).max()) < 0.5  # smooth at the voxel scale
    box = (slice(5, 25), slice(10, 30), slice(20, 50))
    cropped = head.smooth_random_field(head.crop_volume(grid, box), seed=5, wavelength_mm=30.0)
    np.testing.assert_allclose(cropped, field[box], atol=2e-4)


def test_unknown_label_is_refused():
    with pytest.raises(InputError, match="9999"):
        head.tissue_index(np.array([[[0, 2, 9999]]]))


def test_the_readme_tells_the_sample_volumes_against_the_norms(sample):
    """Resources/SampleData/README.md says which structures are outside the adult norms: its table is measured."""
    import re

    from SyntheticMRILib.phantoms.sources import NORMS_ML, structure_volumes

    text = (SAMPLE / "README.md").read_text(encoding="utf-8")
    rows = {m.group(1): (float(m.group(2)), m.group(3).strip()) for m in re.finditer(
        r"^\| ([\w-]+) \| ([\d.]+) \| [\d.]+ ± [\d.]+ \| [\d.]+–[\d.]+ \| ([^|]*) \|$", text, re.M)}
    labels = sample[0]["labels"]
    measured = {k: v for k, v in structure_volumes(np.asarray(labels.array), labels.spacing).items() if k in NORMS_ML}
    assert set(rows) == set(measured)
    for name, ml in measured.items():
        low, high = NORMS_ML[name][2:]
        assert rows[name] == (round(ml, 2), "above the 99th" if ml > high else "below the 1st" if ml < low else ""), name
