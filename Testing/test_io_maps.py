"""The plausibility check of T1/T2/PD maps (SyntheticMRILib.io.maps): one rule, used by every command.

Relaxation times must look like relaxation times of tissue: median T1 and T2 in broad physical ranges, and
T2 <= T1 in (nearly) every tissue voxel. A weighted image, swapped maps or maps in another unit are refused
with a message that says which; the advice ``--units s`` is given only when it would make the maps pass.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import (MAX_T2_ABOVE_T1, T1_MEDIAN_MS, T2_MEDIAN_MS, TISSUE_PD, prepare_maps,
                                     relaxation_problem)
from SyntheticMRILib.io.volumes import read_volume
from SyntheticMRILib.resources import sample_paths

from conftest import make_maps


@pytest.fixture(scope="module")
def sample():
    paths = sample_paths()
    return {name: read_volume(paths[name]) for name in ("t1", "t2", "pd")}


def weighted_image(volumes, tr=500.0, te=10.0, scale=1.0):
    """A spin-echo weighted image of the maps (an independent closed form), scaled to ``scale`` at its maximum."""
    t1, t2, pd = (volumes[k].array.astype(np.float64) for k in ("t1", "t2", "pd"))
    with np.errstate(divide="ignore", invalid="ignore"):
        e = lambda t, T: np.where(T > 0, np.exp(-t / np.where(T > 0, T, 1)), 0.0)
        image = pd * (1 - 2 * e(tr - te / 2, t1) + e(tr, t1)) * e(te, t2)
    return volumes["t1"].with_array((scale * image / image.max()).astype(np.float32))


def scaled(volume, factor):
    return volume.with_array((volume.array.astype(np.float64) * factor).astype(np.float32))


def test_the_sample_passes_the_check(sample):
    maps = prepare_maps(sample["t1"], sample["t2"], sample["pd"])
    assert relaxation_problem(maps.t1, maps.t2, maps.pd) is None
    tissue = (maps.t1 > 0) & (maps.pd > TISSUE_PD)
    assert not np.any(maps.t2[tissue] > maps.t1[tissue])  # the rule holds strictly on the sample


@pytest.mark.parametrize("split, field, lesions", [("train", None, "mixed"), ("test", 1.5, "none")])
def test_the_phantom_generators_maps_pass_the_check(split, field, lesions):
    from SyntheticMRILib.phantoms import generator

    spec = generator.plan_split(split, 1, seed=7, field=field, lesions=lesions)[0]
    subject = generator.generate_subject(spec, 4.0)
    maps = prepare_maps(subject.t1, subject.t2, subject.pd)
    assert relaxation_problem(maps.t1, maps.t2, maps.pd) is None
    tissue = (maps.t1 > 0) & (maps.pd > TISSUE_PD)
    assert not np.any(maps.t2[tissue] > maps.t1[tissue])


def test_the_small_test_maps_are_physical():
    maps = make_maps()
    assert relaxation_problem(maps["t1"].array, maps["t2"].array, maps["pd"].array) is None


@pytest.mark.parametrize("scale", [1.0, 1000.0, 4095.0])
@pytest.mark.parametrize("units", ["ms", "s"])
def test_a_weighted_image_given_as_t1_is_refused_and_never_sent_to_units_s(sample, units, scale):
    """Defect: a T1-weighted image (0-1) as the T1 map was refused with "looks like seconds; pass --units s",
    and with --units s it was accepted. Scaled to 0-1000 or a 12-bit 0-4095 its median looks like ms: T2 > T1
    in most voxels gives it away."""
    weighted = weighted_image(sample, scale=scale)
    with pytest.raises(InputError) as error:
        prepare_maps(weighted, sample["t2"], sample["pd"], units)
    message = str(error.value)
    assert "pass --units" not in message and "looks like ms already" not in message, message
    assert re.search(r"do(es)? not look like", message) and "weighted image" in message, message
    assert "\n" not in message


def test_the_advice_units_s_is_given_only_when_it_makes_the_maps_pass(sample):
    seconds = {k: scaled(sample[k], 1e-3) for k in ("t1", "t2")}
    with pytest.raises(InputError, match="looks like seconds; pass --units s"):
        prepare_maps(seconds["t1"], seconds["t2"], sample["pd"])
    converted = prepare_maps(seconds["t1"], seconds["t2"], sample["pd"], units="s")  # the advice works
    reference = prepare_maps(sample["t1"], sample["t2"], sample["pd"])
    np.testing.assert_allclose(converted.t1, reference.t1, rtol=1e-5)
    with pytest.raises(InputError, match="looks like ms already"):
        prepare_maps(sample["t1"], sample["t2"], sample["pd"], units="s")
    # T1 in s but T2 in ms: --units s would make T2 a thousand times too long; no advice that leads there
    with pytest.raises(InputError) as error:
        prepare_maps(seconds["t1"], sample["t2"], sample["pd"])
    assert "--units s" not in str(error.value) and "in one unit" in str(error.value)


def test_swapped_t1_and_t2_are_refused_as_swapped(sample):
    """Defect: T1 and T2 swapped (T1 median 74 ms, T2 median 924 ms) synthesized without a word."""
    with pytest.raises(InputError, match=r"look swapped.*T1 74 ms.*T2 924 ms"):
        prepare_maps(sample["t2"], sample["t1"], sample["pd"])
    seconds = {k: scaled(sample[k], 1e-3) for k in ("t1", "t2")}
    with pytest.raises(InputError, match="look swapped"):
        prepare_maps(seconds["t2"], seconds["t1"], sample["pd"], units="s")


def test_a_few_voxels_with_t2_above_t1_are_tolerated_many_are_not():
    volumes = make_maps(shape=(20, 20, 20))
    t1, t2, pd = (volumes[k].array.copy() for k in ("t1", "t2", "pd"))
    tissue = np.flatnonzero((t1 > 0) & (pd > TISSUE_PD))
    rng = np.random.default_rng(1)
    few = rng.choice(tissue, int(0.5 * MAX_T2_ABOVE_T1 * tissue.size), replace=False)
    noisy = t2.copy()
    noisy.flat[few] = t1.flat[few] * 1.2  # noise, a partial-volume fit
    assert relaxation_problem(t1, noisy, pd) is None
    many = rng.choice(tissue, int(2 * MAX_T2_ABOVE_T1 * tissue.size), replace=False)
    bad = t2.copy()
    bad.flat[many] = t1.flat[many] * 1.2
    assert "T2 exceeds T1" in relaxation_problem(t1, bad, pd)
    with pytest.raises(InputError, match="T2 exceeds T1"):
        prepare_maps(volumes["t1"], volumes["t1"].with_array(bad), volumes["pd"])


@pytest.mark.parametrize("t1, t2, expected", [
    (0.9, 0.08, "median T1"),  # seconds
    (900.0, 80000.0, "median T2"),  # T2 a thousand times too long
    (900.0, 0.0, "median T2"),  # an empty T2 map
    (9000.0, 80.0, "median T1"),
])
def test_medians_outside_the_physical_ranges_are_named(t1, t2, expected):
    shape = (10, 10, 10)
    problem = relaxation_problem(np.full(shape, t1), np.full(shape, t2), np.full(shape, 0.8))
    assert problem is not None and expected in problem
    assert T1_MEDIAN_MS[0] * 1000 > T1_MEDIAN_MS[1] and T2_MEDIAN_MS[0] * 1000 > T2_MEDIAN_MS[1]  # s and ms never overlap


def test_maps_without_tissue_are_refused():
    volumes = make_maps()
    with pytest.raises(InputError, match="no tissue"):
        prepare_maps(volumes["t1"], volumes["t2"], volumes["pd"].with_array(np.zeros_like(volumes["pd"].array)))
