"""Shared fixtures: rotations, small map volumes on awkward (oblique, left-handed) grids, study folders."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from SyntheticMRILib.io.volumes import Volume, write_volume


def rotation(x_deg: float, z_deg: float) -> np.ndarray:
    """The 3x3 rotation by ``x_deg`` about x, then ``z_deg`` about z."""
    a, b = math.radians(x_deg), math.radians(z_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def oblique_left_handed_direction() -> tuple:
    """A rotation by 20° about x and 35° about z, with the first axis flipped (det = -1)."""
    direction = rotation(20, 35) @ np.diag([-1.0, 1.0, 1.0])
    assert np.linalg.det(direction) < 0
    return tuple(direction.ravel())


def make_maps(shape=(9, 11, 13), seed=0) -> dict:
    """T1/T2 (ms) and PD (fraction) volumes of random brain-like tissue with a background border."""
    rng = np.random.default_rng(seed)
    t1 = rng.uniform(300, 4200, shape).astype(np.float32)
    t2 = np.minimum(rng.uniform(30, 2000, shape), 0.9 * t1).astype(np.float32)  # T2 <= T1 in any tissue
    pd = rng.uniform(0.5, 1.0, shape).astype(np.float32)
    for array in (t1, t2, pd):
        array[0] = 0  # one background slab
        array[:, :, -1] = 0
    grid = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.25, 7.0), direction=oblique_left_handed_direction())
    return {name: Volume(array, **grid) for name, array in (("t1", t1), ("t2", t2), ("pd", pd))}


def write_maps(folder: Path, name_format: str = "{name}.nrrd", **options) -> dict:
    """The maps of :func:`make_maps` (``options``: shape, seed) written as ``folder/name_format``; name -> path."""
    return {name: write_volume(volume, Path(folder) / name_format.format(name=name))
            for name, volume in make_maps(**options).items()}


@pytest.fixture
def map_files(tmp_path):
    """The maps of :func:`make_maps` written as NRRD files; returns (paths, volumes)."""
    volumes = make_maps()
    paths = {name: write_volume(volume, tmp_path / f"{name}.nrrd") for name, volume in volumes.items()}
    return paths, volumes


def write_study(root: Path, subjects: int, shape=(6, 7, 8), missing=()) -> Path:
    """``root/sub-NN/{t1,t2,pd}.nrrd``; the same maps in every subject, hard-linked (a big study costs no disk)."""
    first = root / "sub-00"
    for name, volume in make_maps(shape=shape).items():
        write_volume(volume, first / f"{name}.nrrd")
    for n in range(1, subjects):
        folder = root / f"sub-{n:02d}"
        folder.mkdir(parents=True)
        for source in first.iterdir():
            try:
                os.link(source, folder / source.name)
            except OSError:
                shutil.copy(source, folder / source.name)
    for subject, name in missing:
        (root / subject / f"{name}.nrrd").unlink()
    return root


@pytest.fixture(scope="module")
def big_study(tmp_path_factory) -> Path:
    """Long enough (several seconds on two cores) to be still running when the tests cancel it."""
    return write_study(tmp_path_factory.mktemp("big") / "study", subjects=40, shape=(64, 64, 64))
