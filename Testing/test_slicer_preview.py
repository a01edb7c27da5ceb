"""The live preview (SyntheticMRILib.slicer.preview): which voxels a slice view shows, and writing only those.

Plane geometry and the preview itself are plain numpy/torch and need no Slicer. The bridge's
helpers that read views and nodes (world->IJK, the views showing a volume, the in-place update of
a node) run at the end against real MRML when the slicer-core wheel is installed.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import make_maps, oblique_left_handed_direction, rotation
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import prepare_maps
from SyntheticMRILib.slicer.preview import (MapCache, PlaneVoxels, on_grid, plane_voxels, render_planes,
                                            synthesize_planes)
from SyntheticMRILib.physics.protocols import PRESETS, Protocol, preset
from SyntheticMRILib.physics.synthesis import synthesize_volume
from SyntheticMRILib.io.volumes import Volume


# --------------------------------------------------------------------------- geometry helpers (also used by test_slicer_logic)
def ras_to_ijk(volume: Volume) -> np.ndarray:
    return np.linalg.inv(volume.ijk_to_ras())


def slice_to_ras(normal_axis_ijk: int, volume: Volume, index_ijk) -> np.ndarray:
    """A slice plane through (fractional) voxel ``index_ijk`` whose normal is IJK axis ``normal_axis_ijk``."""
    ijk_to_ras = volume.ijk_to_ras()
    columns = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    order = [a for a in range(3) if a != normal_axis_ijk] + [normal_axis_ijk]
    matrix = np.eye(4)
    matrix[:3, :3] = columns[:, order]
    matrix[:, 3] = ijk_to_ras @ np.array([*index_ijk, 1.0])
    return matrix


def grid(direction) -> Volume:
    return Volume(np.zeros((9, 11, 13), np.float32), (0.9, 1.1, 2.5), (12.5, -30.25, 7.0), tuple(np.ravel(direction)))


DIRECTIONS = {"axis-aligned": np.eye(3), "oblique-left-handed": np.reshape(oblique_left_handed_direction(), (3, 3))}


def shown_voxels(plane: np.ndarray, volume: Volume) -> set:
    """Brute force: the voxels (k, j, i) a view interpolates from, sampled densely over its plane."""
    to_ijk = ras_to_ijk(volume)
    extent = 2.0 * float(np.linalg.norm(np.array(volume.array.shape) * np.array(volume.spacing)))
    u, v = np.meshgrid(np.linspace(-extent, extent, 801), np.linspace(-extent, extent, 801))
    points = plane @ np.stack([u.ravel(), v.ravel(), np.zeros(u.size), np.ones(u.size)])
    ijk = (to_ijk @ points)[:3].T
    ijk = ijk[((ijk > -1) & (ijk < np.array(volume.array.shape[::-1]))).all(axis=1)]
    shown = set()
    for corner in np.ndindex(2, 2, 2):  # trilinear neighbours
        near = np.floor(ijk + 1e-9).astype(int) + np.array(corner)
        near = near[((near >= 0) & (near < np.array(volume.array.shape[::-1]))).all(axis=1)]
        shown.update(map(tuple, near[:, ::-1]))
    return shown


def band(found: PlaneVoxels) -> set:
    """The voxels (k, j, i) of a plane_voxels result."""
    axis, indices = found
    voxels = set()
    for position in np.ndindex(indices.shape):
        voxel = list(position)
        voxel[axis] = int(indices[position])
        voxels.add(tuple(voxel))
    return voxels


def oblique_plane(volume: Volume, tilt=(15, 20), through=(6.2, 5.4, 4.1), normal_axis_ijk: int = 1) -> np.ndarray:
    plane = slice_to_ras(normal_axis_ijk, volume, through)
    plane[:3, :3] = rotation(*tilt) @ plane[:3, :3]
    return plane


# --------------------------------------------------------------------------- plane geometry
@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_plane_voxels_of_a_view_aligned_with_the_grid_are_one_slice(direction):
    volume = grid(direction)
    shape = volume.array.shape  # (k, j, i) = (9, 11, 13)
    for axis_ijk, index in ((0, (7, 3, 4)), (1, (2, 9, 1)), (2, (5, 6, 8))):
        plane = slice_to_ras(axis_ijk, volume, index)
        shifted = plane.copy()  # another point of the same plane
        shifted[:3, 3] += 3.0 * plane[:3, 0] - 2.0 * plane[:3, 1]
        flipped = plane @ np.diag([1.0, -1.0, -1.0, 1.0])  # the normal reversed
        for view in (plane, shifted, flipped):
            found = plane_voxels(view, ras_to_ijk(volume), shape)
            axis, indices = found
            assert axis == 2 - axis_ijk and found.width == 1 and (indices == index[axis_ijk]).all()
            assert indices.shape == tuple(1 if a == axis else shape[a] for a in range(3))
            assert band(found) == {v for v in np.ndindex(shape) if v[axis] == index[axis_ijk]}


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
@pytest.mark.parametrize("tilt", [(4, 0), (17, 25), (40, -30)])
def test_plane_voxels_of_an_oblique_view_cover_what_it_shows(direction, tilt):
    volume = grid(direction)
    plane = slice_to_ras(2, volume, (5.3, 6.1, 4.4))
    plane[:3, :3] = rotation(*tilt) @ plane[:3, :3]
    found = plane_voxels(plane, ras_to_ijk(volume), volume.array.shape)
    shown = shown_voxels(plane, volume)
    assert shown <= band(found)
    assert found.width <= 6  # a band, not the volume
    shape = volume.array.shape  # the indices are laid out for take_along_axis / torch.gather:
    taken = np.take_along_axis(np.arange(volume.array.size).reshape(shape), found.indices, found.axis).ravel()
    assert {tuple(int(c) for c in np.unravel_index(v, shape)) for v in taken} == band(found)
    assert len(band(found)) <= 1.1 * len(shown)  # and hardly more than the view shows


def test_plane_voxels_of_a_view_outside_the_volume_are_none():
    volume = grid(np.eye(3))
    assert plane_voxels(slice_to_ras(2, volume, (5, 6, 10)), ras_to_ijk(volume), volume.array.shape) is None
    assert plane_voxels(slice_to_ras(2, volume, (5, 6, -2)), ras_to_ijk(volume), volume.array.shape) is None
    degenerate = np.zeros((4, 4))  # a slice node with no plane
    degenerate[3, 3] = 1.0
    assert plane_voxels(degenerate, ras_to_ijk(volume), volume.array.shape) is None


def test_on_grid_compares_shape_and_matrix():
    volume = make_maps()["t1"]
    assert on_grid(ras_to_ijk(volume), volume.array.shape, volume)
    assert not on_grid(None, volume.array.shape, volume)
    assert not on_grid(ras_to_ijk(volume), (9, 11, 12), volume)
    moved = ras_to_ijk(volume) @ np.array([[1, 0, 0, 0.01], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    assert not on_grid(moved, volume.array.shape, volume)


# --------------------------------------------------------------------------- the preview
def _planes(volume: Volume) -> list:
    """A k slice and an i slice through voxel centres, an oblique view, and a view that misses the volume."""
    to_ijk, shape = ras_to_ijk(volume), volume.array.shape
    views = [slice_to_ras(2, volume, (6, 5, 4)), slice_to_ras(0, volume, (7, 5, 4)), oblique_plane(volume),
             slice_to_ras(2, volume, (5, 6, 30))]
    return [plane_voxels(view, to_ijk, shape) for view in views]


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("kind", ["arrays", "tensors"])
def test_preview_writes_what_the_full_volume_has_there_and_nothing_else(name, kind):
    maps = make_maps()  # oblique, left-handed, anisotropic grid with background
    arrays = [maps[key].array for key in ("t1", "t2", "pd")]
    tensors = [torch.from_numpy(a) for a in arrays]
    protocol = PRESETS[name].protocol
    full = synthesize_volume(*tensors, protocol).numpy()
    before = synthesize_volume(*tensors, preset("T2-FLAIR" if name != "T2-FLAIR" else "T1w").protocol).numpy()
    out = before.copy()
    planes = _planes(maps["t1"])
    assert planes[-1] is None and planes[0].width == 1 and planes[2].width > 1
    inputs = arrays if kind == "arrays" else tensors
    assert synthesize_planes(*inputs, protocol, planes, out) == 3
    written = np.zeros(out.shape, bool)
    for found in planes[:3]:
        for voxel in band(found):
            written[voxel] = True
    np.testing.assert_allclose(out[written], full[written], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(out[~written], before[~written])
    assert written[4].all() and written[:, :, 7].all() and written.sum() < 0.6 * written.size


def scan_maps():
    """A ScanMaps over the maps of make_maps: a noisy T2w-like image (background included), a gain and a floor."""
    from SyntheticMRILib.models.reparam import ScanMaps

    maps = make_maps()
    arrays = tuple(maps[key].array for key in ("t1", "t2", "pd"))
    protocol = preset("T2w").protocol
    image = 300.0 * synthesize_volume(*(torch.from_numpy(a) for a in arrays), protocol).numpy()
    image = np.abs(image + np.random.default_rng(1).normal(0, 5, image.shape)).astype(np.float32)
    return ScanMaps(maps["t1"].with_array(image), protocol, arrays, gain=280.0, floor=0.02)


@pytest.mark.parametrize("name", ["T1w", "T2-FLAIR", "PSIR", "DIR"])
def test_the_reparam_preview_writes_what_the_whole_render_has_there_and_nothing_else(name):
    """render_planes: the voxels of the views hold ScanMaps.render(target) (maps, gain and carried residual), the
    others are untouched; a signed target (PSIR) keeps its sign."""
    scan = scan_maps()
    target = PRESETS[name].protocol
    full = scan.render(target)
    before = scan.render(preset("STIR").protocol)
    out = before.copy()
    planes = _planes(scan.image)
    assert render_planes(scan, target, planes, out) == 3
    written = np.zeros(out.shape, bool)
    for found in planes[:3]:
        for voxel in band(found):
            written[voxel] = True
    np.testing.assert_allclose(out[written], full[written], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out[~written], before[~written])
    assert written[4].all() and written[:, :, 7].all() and written.sum() < 0.6 * written.size
    assert render_planes(scan, target, [None], out) == 0
    with pytest.raises(ValueError, match="must not be the scan"):
        render_planes(scan, target, planes, scan.image.array)
    with pytest.raises(ValueError, match="shape"):
        render_planes(scan, target, planes, np.zeros((9, 11, 12), np.float32))


def test_preview_of_integer_maps_computes_in_float():
    maps = make_maps()
    arrays = [np.round(maps["t1"].array).astype(np.int16), np.round(maps["t2"].array).astype(np.int16), maps["pd"].array]
    protocol = preset("T2w").protocol
    full = synthesize_volume(*(torch.from_numpy(a).float() for a in arrays), protocol).numpy()
    out = np.zeros(full.shape, np.float32)
    planes = _planes(maps["t1"])
    synthesize_planes(*arrays, protocol, planes, out)
    for found in planes[:3]:
        voxels = tuple(np.array(sorted(band(found))).T)
        np.testing.assert_allclose(out[voxels], full[voxels], rtol=1e-6, atol=0)


def test_preview_of_no_plane_writes_nothing():
    maps = make_maps()
    arrays = [maps[key].array for key in ("t1", "t2", "pd")]
    out = np.full(arrays[0].shape, 7.0, np.float32)
    assert synthesize_planes(*arrays, preset("T1w").protocol, [None], out) == 0
    assert synthesize_planes(*arrays, preset("T1w").protocol, [], out) == 0
    assert (out == 7.0).all()


def test_preview_refuses_an_input_as_output_and_mismatched_shapes():
    maps = make_maps()
    arrays = [maps[key].array.copy() for key in ("t1", "t2", "pd")]
    planes = _planes(maps["t1"])
    protocol = preset("T1w").protocol
    for index in range(3):
        with pytest.raises(ValueError, match="must not be one of the input maps"):
            synthesize_planes(*arrays, protocol, planes, arrays[index])
    with pytest.raises(ValueError, match="must not be one of the input maps"):
        synthesize_planes(torch.from_numpy(arrays[0]), *arrays[1:], protocol, planes, arrays[0][...])  # a view of it
    with pytest.raises(ValueError, match="shape"):
        synthesize_planes(*arrays, protocol, planes, np.zeros((9, 11, 12), np.float32))
    with pytest.raises(TypeError):
        synthesize_planes(*arrays, protocol, planes, torch.zeros(arrays[0].shape))
    with pytest.raises(InputError):  # parameters are validated as in every synthesis
        synthesize_planes(*arrays, Protocol("ir", 500, 10, ti=600), planes, np.zeros(arrays[0].shape, np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_preview_from_maps_on_the_gpu_matches_the_cpu():
    maps = make_maps()
    arrays = [maps[key].array for key in ("t1", "t2", "pd")]
    protocol = preset("DIR").protocol
    planes = _planes(maps["t1"])
    on_cpu, on_gpu = np.zeros(arrays[0].shape, np.float32), np.zeros(arrays[0].shape, np.float32)
    synthesize_planes(*arrays, protocol, planes, on_cpu)
    synthesize_planes(*(torch.from_numpy(a).cuda() for a in arrays), protocol, planes, on_gpu)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-5, atol=1e-7)


def test_map_cache_loads_once_per_key_and_device(caplog):
    volumes = make_maps()
    pd_percent = volumes["pd"].with_array(volumes["pd"].array * 100)
    calls = []

    def load():
        calls.append(1)
        return prepare_maps(volumes["t1"], volumes["t2"], pd_percent)

    cache = MapCache()
    with caplog.at_level(logging.INFO, logger="SyntheticMRILib.slicer.preview"):
        maps, tensors = cache.get(("stamps", "ms"), load, "cpu")
    assert "percent" in caplog.text  # the maps' notes reach the log
    assert len(calls) == 1 and cache.loads == 1 and tensors[0].device.type == "cpu"
    np.testing.assert_array_equal(tensors[2].numpy(), maps.pd)
    assert cache.get(("stamps", "ms"), load, "cpu")[1] is tensors and len(calls) == 1
    cache.get(("stamps changed", "ms"), load, "cpu")
    cache.get(("stamps changed", "ms"), load, "auto")
    assert len(calls) == 3
    cache.clear()
    cache.get(("stamps changed", "ms"), load, "auto")
    assert len(calls) == 4


# --------------------------------------------------------------------------- the bridge's view helpers (slicer-core)
@pytest.fixture
def bridge():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core (real MRML) is not installed")
    from SyntheticMRILib.slicer import bridge as slicer_bridge

    return slicer_bridge


def _nodes(bridge, scene):
    volumes = make_maps()
    return {name: bridge.node_from_volume(volume, name, scene=scene) for name, volume in volumes.items()}


def test_world_to_ijk_through_parent_transforms(bridge):
    import vtk

    scene = bridge.create_scene()
    node = _nodes(bridge, scene)["t1"]
    volume = make_maps()["t1"]
    np.testing.assert_allclose(bridge.world_to_ijk(node), ras_to_ijk(volume), atol=1e-9)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    to_parent = np.eye(4)
    to_parent[:3, :3], to_parent[:3, 3] = rotation(10, -15), (5.0, -3.0, 2.5)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, to_parent[r, c])
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(bridge.world_to_ijk(node), ras_to_ijk(volume) @ np.linalg.inv(to_parent), atol=1e-9)
    assert on_grid(bridge.world_to_ijk(node), volume.array.shape, bridge.volume_from_node(node))  # the folded grid
    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")  # a displacement field: not linear
    assert not warp.IsTransformToWorldLinear()
    node.SetAndObserveTransformNodeID(warp.GetID())
    assert bridge.world_to_ijk(node) is None


def test_node_stamps_change_when_the_voxels_do(bridge):
    scene = bridge.create_scene()
    nodes = _nodes(bridge, scene)
    stamps = bridge.node_stamps(nodes.values())
    assert stamps == bridge.node_stamps(nodes.values())
    nodes["t2"].GetImageData().Modified()
    assert stamps != bridge.node_stamps(nodes.values())


def test_slice_nodes_showing_follow_the_layout(bridge):
    scene = bridge.create_scene()
    nodes = _nodes(bridge, scene)
    views = {}
    for name, background, foreground in (("Red", "t1", None), ("Yellow", "t2", "t1"), ("Green", "pd", None)):
        slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        slice_node.SetLayoutName(name)
        slice_node.SetMappedInLayout(True)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        composite.SetBackgroundVolumeID(nodes[background].GetID())
        if foreground:
            composite.SetForegroundVolumeID(nodes[foreground].GetID())
        views[name] = slice_node
    assert bridge.slice_nodes_showing(nodes["t1"]) == [views["Red"], views["Yellow"]]
    assert bridge.slice_nodes_showing(nodes["pd"]) == [views["Green"]]
    views["Yellow"].SetMappedInLayout(False)  # another layout, or a maximized view
    views["Red"].SetVisibility(False)
    assert bridge.slice_nodes_showing(nodes["t1"]) == []
    np.testing.assert_array_equal(bridge.slice_to_ras(views["Green"]), np.eye(4))


def test_update_visible_slices_writes_the_node_in_place(bridge):
    scene = bridge.create_scene()
    nodes = _nodes(bridge, scene)
    maps = bridge.maps_from_nodes(nodes["t1"], nodes["t2"], nodes["pd"])
    tensors = maps.tensors()
    protocol = preset("STIR").protocol
    full = synthesize_volume(*tensors, protocol).numpy()
    output = bridge.node_from_volume(maps.volume(synthesize_volume(*tensors, preset("T1w").protocol).numpy()), "out", scene=scene)
    before = bridge.volume_from_node(output).array
    image = output.GetImageData()
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetLayoutName("Red")
    slice_node.SetMappedInLayout(True)
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    composite.SetLayoutName("Red")
    composite.SetBackgroundVolumeID(output.GetID())
    volume = bridge.volume_from_node(output)
    for r in range(4):
        for c in range(4):
            slice_node.GetSliceToRAS().SetElement(r, c, slice_to_ras(2, volume, (6, 5, 4))[r, c])
    mtime = image.GetMTime()
    assert bridge.update_visible_slices(maps, tensors, protocol, output) == 1  # the views showing it
    after = bridge.volume_from_node(output).array
    assert output.GetImageData() is image and image.GetMTime() > mtime
    np.testing.assert_allclose(after[4], full[4], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(np.delete(after, 4, axis=0), np.delete(before, 4, axis=0))
    output.SetSpacing(2.0, 2.0, 2.0)  # off the maps' grid: nothing is written
    assert bridge.update_visible_slices(maps, tensors, preset("T2w").protocol, output, [slice_node]) == 0
    np.testing.assert_array_equal(bridge.volume_from_node(output).array, after)
