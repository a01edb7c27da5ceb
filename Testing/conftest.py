"""Shared fixtures: small map volumes on awkward (oblique, left-handed) grids."""
from __future__ import annotations

import math

import numpy as np
import pytest

from SyntheticMRILib.volumes import Volume, write_volume


def oblique_left_handed_direction() -> tuple:
    """A rotation by 20° about x and 35° about z, with the first axis flipped (det = -1)."""
    a, b = math.radians(20), math.radians(35)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    direction = rz @ rx @ np.diag([-1.0, 1.0, 1.0])
    assert np.linalg.det(direction) < 0
    return tuple(direction.ravel())


def make_maps(shape=(9, 11, 13), seed=0) -> dict:
    """T1/T2 (ms) and PD (fraction) volumes of random brain-like tissue with a background border."""
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(300, 4200, shape).astype(np.float32)
    t2 = rng.uniform(30, 2000, shape).astype(np.float32)
    pd = rng.uniform(0.5, 1.0, shape).astype(np.float32)
    for array in (t1, t2, pd):
        array[0] = 0  # one background slab
        array[:, :, -1] = 0
    grid = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.25, 7.0), direction=oblique_left_handed_direction())
    return {name: Volume(array, **grid) for name, array in (("t1", t1), ("t2", t2), ("pd", pd))}


@pytest.fixture
def map_files(tmp_path):
    """The maps of :func:`make_maps` written as NRRD files; returns (paths, volumes)."""
    volumes = make_maps()
    paths = {name: write_volume(volume, tmp_path / f"{name}.nrrd") for name, volume in volumes.items()}
    return paths, volumes
