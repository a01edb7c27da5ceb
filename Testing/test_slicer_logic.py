"""The module's logic (SyntheticMRILib.slicer.logic) against real MRML (slicer-core), and the install decisions
(SyntheticMRILib.slicer.install) with fakes for pip and PyTorch Utils."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import MAP_NAMES, load_maps
from SyntheticMRILib.io.volumes import Volume
from SyntheticMRILib.physics.protocols import PRESETS, Protocol
from SyntheticMRILib.slicer import install
from SyntheticMRILib.slicer.logic import PROTOCOL_ATTRIBUTE, SOURCE_ATTRIBUTE, SyntheticMRILogic
from conftest import rotation
from test_slicer_preview import DIRECTIONS, oblique_plane, shown_voxels, slice_to_ras

SAMPLE = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
ROUTINE = {"T1w": "t1w", "T2w": "t2w", "T2-FLAIR": "flair"}  # the presets that stand in for the routine series


@pytest.fixture
def logic(monkeypatch):
    """The logic over a fresh headless scene as slicer.mrmlScene."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core (real MRML) is not installed")
    from SyntheticMRILib.slicer import bridge

    monkeypatch.setattr(slicer, "mrmlScene", bridge.create_scene(), raising=False)
    return SyntheticMRILogic()


def _map_nodes(direction):
    """T1/T2/PD nodes of brain-like random tissue on an awkward grid, in slicer.mrmlScene."""
    import slicer
    from SyntheticMRILib.slicer import bridge as slicer_bridge

    rng = np.random.default_rng(3)
    shape = (9, 11, 13)
    arrays = {
        "t1": rng.uniform(300, 4200, shape), "t2": rng.uniform(30, 2000, shape), "pd": rng.uniform(0.5, 1.0, shape)
    }
    arrays["t2"] = np.minimum(arrays["t2"], 0.9 * arrays["t1"])  # T2 <= T1 in any tissue
    grid = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.25, 7.0), direction=tuple(np.ravel(direction)))
    return {
        name: slicer_bridge.node_from_volume(Volume(a.astype(np.float32), **grid), name, scene=slicer.mrmlScene)
        for name, a in arrays.items()
    }


@pytest.mark.parametrize("direction", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_logic_previews_what_the_views_show(logic, direction):
    """Two views aligned with the grid and one oblique, as vtkMRMLSliceNodes over real volume nodes."""
    import slicer

    nodes = _map_nodes(direction)
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2-FLAIR", fused=False)
    assert output.GetName() == "Synthetic T2-FLAIR" and output.GetAttribute(PROTOCOL_ATTRIBUTE).startswith("ir ")
    flair = slicer.util.arrayFromVolume(output).copy()
    reference = slicer.util.arrayFromVolume(
        logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False, name="reference")
    ).copy()

    volume = slicer_volume(output)  # the node's grid as the library sees it
    planes = [slice_to_ras(2, volume, (6, 5, 4)), slice_to_ras(0, volume, (7, 5, 4))]  # a k and an i slice
    oblique = oblique_plane(volume, tilt=(15, 20), through=(6.2, 5.4, 4.1), normal_axis_ijk=1)
    slice_nodes = []
    for plane in planes + [oblique]:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slicer.util.updateVTKMatrixFromArray(node.GetSliceToRAS(), plane)
        slice_nodes.append(node)

    assert logic.updateVisibleSlices(
        nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output, sliceNodes=slice_nodes[:2]
    ) == 2
    after = slicer.util.arrayFromVolume(output).copy()
    expected = flair.copy()
    expected[4] = reference[4]  # k = 4
    expected[:, :, 7] = reference[:, :, 7]  # i = 7
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-7)

    logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output, sliceNodes=slice_nodes[2:])
    after = slicer.util.arrayFromVolume(output)
    shown = tuple(np.array(sorted(shown_voxels(oblique, volume))).T)
    np.testing.assert_allclose(after[shown], reference[shown], rtol=1e-5, atol=1e-7)
    untouched = after == flair
    assert untouched.sum() > 0.5 * after.size  # a band around the plane, not the volume


def test_logic_previews_the_views_of_the_layout_by_default_and_converts_the_maps_once(logic):
    """Without sliceNodes, the views laid out that show the output (matched by layout name, as Slicer does)."""
    import slicer

    nodes = _map_nodes(np.eye(3))
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2-FLAIR", fused=False)
    flair = slicer.util.arrayFromVolume(output).copy()
    reference = slicer.util.arrayFromVolume(
        logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False, name="reference")
    ).copy()
    volume = slicer_volume(output)
    for name, plane, shows in (("Red", slice_to_ras(2, volume, (6, 5, 4)), output),
                               ("Green", slice_to_ras(1, volume, (6, 8, 4)), nodes["t1"]),  # shows another volume
                               ("Slice4", slice_to_ras(0, volume, (7, 5, 4)), output)):  # not in the layout
        slice_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
        slice_node.SetLayoutName(name)
        slice_node.SetMappedInLayout(name != "Slice4")
        slicer.util.updateVTKMatrixFromArray(slice_node.GetSliceToRAS(), plane)
        composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        composite.SetBackgroundVolumeID(shows.GetID())
    assert logic._cache.loads == 1  # two syntheses from the same maps: converted once
    assert logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output) == 1
    expected = flair.copy()
    expected[4] = reference[4]
    np.testing.assert_allclose(slicer.util.arrayFromVolume(output), expected, rtol=1e-5, atol=1e-7)
    assert logic._cache.loads == 1
    nodes["t2"].GetImageData().Modified()  # an edited map is converted again
    logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], logic.presetProtocol("T1w"), output)
    assert logic._cache.loads == 2


def test_logic_keeps_a_user_named_output_and_refuses_an_input_as_output(logic):
    import slicer
    from SyntheticMRILib.slicer import bridge as slicer_bridge

    nodes = _map_nodes(np.eye(3))
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False)
    assert output.GetName() == "Synthetic T1w"
    logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "STIR", outputNode=output, fused=False)
    assert output.GetName() == "Synthetic STIR"  # named by the module: follows the contrast
    output.SetName("my contrast")  # renamed by the user (the Data module touches no attribute)
    logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2w", outputNode=output, fused=False)
    assert output.GetName() == "my contrast"
    logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", outputNode=output, fused=False)
    assert output.GetName() == "my contrast" and output.GetAttribute(PROTOCOL_ATTRIBUTE).startswith("se ")
    fresh = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Volume")  # from "Create new volume"
    assert logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "DIR", outputNode=fresh, fused=False).GetName() == "Synthetic DIR"
    assert PROTOCOL_ATTRIBUTE == slicer_bridge.PROTOCOL_ATTRIBUTE  # the logic's copy (it does not import the bridge)
    with pytest.raises(ValueError):
        logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T2w", outputNode=nodes["t2"], fused=False)


def test_logic_previews_nothing_into_an_output_off_the_maps_grid(logic):
    import slicer

    nodes = _map_nodes(np.eye(3))
    output = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "T1w", fused=False)
    before = slicer.util.arrayFromVolume(output).copy()
    output.SetSpacing(2.0, 2.0, 2.0)  # same shape, another grid: voxel indices no longer match
    slice_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    slicer.util.updateVTKMatrixFromArray(slice_node.GetSliceToRAS(), slice_to_ras(2, slicer_volume(output), (6, 5, 4)))
    protocol = logic.presetProtocol("T2w")
    assert logic.updateVisibleSlices(nodes["t1"], nodes["t2"], nodes["pd"], protocol, output, sliceNodes=[slice_node]) == 0
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), before)


def slicer_volume(node) -> Volume:
    from SyntheticMRILib.slicer import bridge as slicer_bridge

    return slicer_bridge.volume_from_node(node)


def test_logic_protocols_drop_what_the_sequence_does_not_take():
    logic = SyntheticMRILogic()
    protocol = logic.protocol("Custom spin echo", tr=500, te=10, ti=400, ti2=100, flip=30)
    assert (protocol.sequence, protocol.ti, protocol.ti2, protocol.flip) == ("se", None, None, None)
    assert logic.protocol("DIR", **PRESETS["DIR"].protocol.values()) == PRESETS["DIR"].protocol
    assert logic.outputName("Custom double IR") == "Synthetic double IR" and logic.outputName("STIR") == "Synthetic STIR"


# --------------------------------------------------------------------------- maps from routine scans
def tiny_mapper(path: Path) -> Path:
    """An untrained map model, seeded (the same maps every run): for the plumbing, not for accuracy."""
    import torch
    from SyntheticMRILib.models.mapper import MapNet, save_mapper

    torch.manual_seed(0)
    config = {"channels": [4, 8], "context": 1, "embedding": 8, "variant": "film", "physics_term": True}
    return save_mapper(MapNet(config), path)


def sample_slab() -> tuple:
    """T1/T2/PD (ms, fraction) of an 8-slice slab of the bundled sample on an oblique, anisotropic grid (the head
    turned with it, so the model resamples to its 1 mm axial grid and back)."""
    maps = load_maps(*(SAMPLE / f"{name}.nrrd" for name in MAP_NAMES))
    box = (slice(80, 88), slice(None), slice(None))
    grid = dict(spacing=(1.1, 0.9, 1.3), origin=(-70.0, -55.5, 12.25), direction=tuple(rotation(10, 20).ravel()))
    return tuple(Volume(np.ascontiguousarray(m[box]), **grid) for m in (maps.t1, maps.t2, maps.pd))


def routine_nodes(logic) -> list:
    """T1w, T2w and T2-FLAIR nodes synthesized from :func:`sample_slab`; they carry their protocols."""
    from SyntheticMRILib.slicer import bridge

    t1, t2, pd = (bridge.node_from_volume(volume, name) for volume, name in zip(sample_slab(), MAP_NAMES))
    return [logic.synthesize(t1, t2, pd, contrast, fused=False, name=series) for contrast, series in ROUTINE.items()]


def routine_values() -> dict:
    return {series: PRESETS[contrast].protocol.values() for contrast, series in ROUTINE.items()}


@pytest.fixture
def temporary(monkeypatch, tmp_path):
    """slicer.app.temporaryPath, where the job folders go: empty."""
    import slicer

    folder = tmp_path / "temporary"
    folder.mkdir()
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(folder)), raising=False)
    return folder


def test_logic_estimates_maps_from_routine_scans_in_a_child_on_the_t1ws_grid(logic, temporary, tmp_path):
    from SyntheticMRILib.slicer import bridge

    model = tiny_mapper(tmp_path / "mapper.pt")
    t1w, t2w, flair = routine_nodes(logic)
    t1, t2, pd = logic.estimateMaps(t1w, t2w, flair, routine_values(), device="cpu", model=str(model))
    assert [node.GetName() for node in (t1, t2, pd)] == ["T1 map (estimated)", "T2 map (estimated)", "PD map (estimated)"]
    grid = bridge.volume_from_node(t1w)
    head = sample_slab()[2].array > 0
    for node in (t1, t2, pd):
        volume = bridge.volume_from_node(node)
        assert volume.array.shape == grid.array.shape
        np.testing.assert_allclose(volume.spacing, grid.spacing, atol=1e-6)
        np.testing.assert_allclose(volume.origin, grid.origin, atol=1e-6)
        np.testing.assert_allclose(volume.direction, grid.direction, atol=1e-6)
    t1Array, t2Array = (bridge.volume_from_node(node).array for node in (t1, t2))
    assert (t1Array[head] > 0).mean() > 0.95 and (t2Array[head] > 0).mean() > 0.95
    assert np.all(t2Array <= t1Array + 1e-3)  # T2 <= T1, as the model's outputs are built
    assert not any(temporary.iterdir())  # the job folder is gone


def test_logic_surfaces_the_childs_one_line_error_and_leaves_no_folder(logic, temporary, tmp_path):
    values = routine_values()
    values["t1w"] = {"tr": 500.0, "te": 600.0}  # TE after TR
    with pytest.raises(RuntimeError) as error:
        logic.estimateMaps(*routine_nodes(logic), values, device="cpu", model=str(tiny_mapper(tmp_path / "mapper.pt")))
    assert str(error.value).startswith("syntheticmri: error: t1w:") and "\n" not in str(error.value)
    assert not any(temporary.iterdir())


def test_protocol_values_come_from_a_synthesized_contrast_or_dicom(logic, monkeypatch):
    import slicer

    t1w, t2w, flair = routine_nodes(logic)
    assert logic.protocolValuesFromNode(flair, "flair") == {
        name: float(value) for name, value in PRESETS["T2-FLAIR"].protocol.values().items()}
    assert logic.protocolValuesFromNode(flair, "t2w") == {"tr": 9000.0, "te": 90.0}  # a T2w takes no TI
    assert logic.protocolValuesFromNode(t1w, "flair") == {"tr": 500.0, "te": 10.0}  # a spin echo has none
    plain = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    assert logic.protocolValuesFromNode(plain, "t1w") == {} and logic.protocolValuesFromNode(None, "t1w") == {}

    headers = {"/dicom/1.2.3": {"0018,0080": "8000", "0018,0081": "120\\125", "0018,0082": "2400.5"}}
    database = types.SimpleNamespace(fileForInstance=lambda uid: f"/dicom/{uid}",
                                     fileValue=lambda path, tag: headers.get(path, {}).get(tag, ""))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    plain.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")  # the first instance's header
    assert logic.protocolValuesFromNode(plain, "flair") == {"tr": 8000.0, "te": 120.0, "ti": 2400.5}
    headers["/dicom/1.2.3"].update({"0018,0080": "", "0018,0082": "n/a"})  # absent, unreadable
    assert logic.protocolValuesFromNode(plain, "flair") == {"te": 120.0}


# --------------------------------------------------------------------------- re-parameterize a scan
T1W = PRESETS["T1w"].protocol


def tiny_reparam(path: Path, engine: str = "physics") -> Path:
    """An untrained re-parameterization model of ``engine``, seeded: for the plumbing, not for accuracy."""
    import torch
    from SyntheticMRILib.models.mapper import save_mapper
    from SyntheticMRILib.models.reparam import DirectNet, physics_network

    torch.manual_seed(0)
    network = physics_network(channels=(4, 8), embedding=8) if engine == "physics" else \
        DirectNet({"channels": [4, 8], "mode": "param", "range": 10.0})
    return save_mapper(network, path)


def scan_node(volume: Volume, name: str = "T1w scan"):
    """A scan as a volume node of slicer.mrmlScene."""
    from SyntheticMRILib.slicer import bridge

    return bridge.node_from_volume(volume, name)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """The physics engine's maps of a T1w scan (synthesized from an oblique, anisotropic slab of the sample),
    predicted once by the logic in a real child with a tiny model; also the temporary folder it used."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core (real MRML) is not installed")
    from SyntheticMRILib.slicer import bridge

    temporary = tmp_path_factory.mktemp("temporary")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(slicer, "mrmlScene", bridge.create_scene(), raising=False)
        patch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(temporary)), raising=False)
        logic = SyntheticMRILogic()
        t1w = routine_nodes(logic)[0]
        model = tiny_reparam(tmp_path_factory.mktemp("model") / "physics.pt")
        protocol = logic.scanProtocolOfNode(t1w)[0]  # {"sequence": "se", "tr": 500.0, "te": 10.0}: as the console gives it
        maps = logic.predictScanMaps(t1w, protocol, device="cpu", model=str(model))
        return maps, bridge.volume_from_node(t1w), temporary


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_logic_predicts_a_scans_maps_in_a_child_on_its_grid(predicted):
    maps, scan, temporary = predicted
    assert maps.protocol == T1W and maps.gain > 0 and maps.floor > 0
    assert maps.image.same_grid(scan) and np.array_equal(maps.image.array, scan.array)
    t1, t2, pd = maps.maps
    assert all(m.shape == scan.array.shape and m.dtype == np.float32 for m in maps.maps)
    assert all(np.isfinite(m).all() and (m >= 0).all() and (m > 0).any() for m in maps.maps)
    assert np.all(t2 <= t1 + 1e-3)  # T2 <= T1, as the network's outputs are built (untrained: no accuracy here)
    assert not any(temporary.iterdir())  # the job folder is gone


def test_logic_reparameterizes_the_whole_scan_on_its_grid_with_the_targets_provenance(logic, predicted):
    import slicer

    maps, scan, _ = predicted
    node = scan_node(scan)
    output = logic.reparameterizeScan(maps, "T2-FLAIR")
    assert output.GetScene() is slicer.mrmlScene and output.GetName() == "Scan as T2-FLAIR"
    assert np.array_equal(ijk_to_ras(output), ijk_to_ras(node))  # the scan's grid, exactly
    flair = PRESETS["T2-FLAIR"].protocol
    assert np.array_equal(slicer.util.arrayFromVolume(output), maps.render(flair))
    assert output.GetAttribute(PROTOCOL_ATTRIBUTE) == f"ir {flair.caption()}"
    assert output.GetAttribute("SyntheticMRI.Preset") == "T2-FLAIR"
    assert output.GetAttribute(SOURCE_ATTRIBUTE) == "se TR 500 TE 10, physics engine"
    from SyntheticMRILib.slicer import bridge

    assert SOURCE_ATTRIBUTE == bridge.SOURCE_ATTRIBUTE  # the logic's copy (it does not import the bridge)

    # The input's own protocol gives back the input (into the same node: a Protocol target, no preset left).
    same = logic.reparameterizeScan(maps, T1W, outputNode=output, name="same")
    voxels = slicer.util.arrayFromVolume(same)
    assert same is output and output.GetAttribute("SyntheticMRI.Preset") is None and output.GetName() == "same"
    assert np.linalg.norm(voxels - scan.array) <= 1e-3 * np.linalg.norm(scan.array)
    np.testing.assert_allclose(voxels, scan.array, rtol=1e-3, atol=1e-3 * float(scan.array.max()))
    # A target only the physics layer makes (DIR), as fast as a synthesis: no network runs.
    assert logic.reparameterizeScan(maps, "DIR", outputNode=output).GetAttribute(PROTOCOL_ATTRIBUTE).startswith("dir ")
    assert logic.lastDuration < 5.0


@pytest.mark.parametrize("view", ["k slice", "i slice", "oblique"])
def test_logic_previews_a_reparameterized_scan_in_the_visible_slices_only(logic, predicted, view):
    """Only the voxels of the views change, and they hold ScanMaps.render's values; the rest stays as it was."""
    import slicer
    from SyntheticMRILib.slicer import bridge
    from SyntheticMRILib.slicer.preview import plane_voxels

    maps, scan, _ = predicted
    output = logic.reparameterizeScan(maps, "T2w")
    before = slicer.util.arrayFromVolume(output).copy()
    volume = bridge.volume_from_node(output)
    plane = {"k slice": slice_to_ras(2, volume, (90, 100, 4)), "i slice": slice_to_ras(0, volume, (60, 100, 4)),
             "oblique": oblique_plane(volume, tilt=(4, 10), through=(93.3, 110.6, 3.4), normal_axis_ijk=2)}[view]
    sliceNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    slicer.util.updateVTKMatrixFromArray(sliceNode.GetSliceToRAS(), plane)
    target = PRESETS["T1-FLAIR"].protocol
    assert logic.updateVisibleReparam(maps, "T1-FLAIR", output, sliceNodes=[sliceNode]) == 1
    after, full = slicer.util.arrayFromVolume(output), maps.render(target)
    found = plane_voxels(plane, bridge.world_to_ijk(output), after.shape)
    written = np.zeros(after.shape, bool)
    np.put_along_axis(written, found.indices, True, found.axis)
    if view == "k slice":
        assert written[4].all() and written.sum() == written[4].size
    elif view == "i slice":
        assert written[:, :, 60].all() and written.sum() == written[:, :, 60].size
    else:  # a band around the plane, holding every voxel the view shows
        shown = tuple(np.array(sorted(shown_voxels(plane, volume))).T)
        assert written[shown].all() and written.sum() < 0.5 * written.size
    np.testing.assert_allclose(after[written], full[written], rtol=1e-5, atol=1e-5 * float(full.max()))
    np.testing.assert_array_equal(after[~written], before[~written])
    assert not np.allclose(after[written], before[written])  # the preview did change them

    moved = logic.reparameterizeScan(maps, "T2w")  # off the scan's grid: nothing is written
    moved.SetSpacing(2.0, 2.0, 2.0)
    was = slicer.util.arrayFromVolume(moved).copy()
    assert logic.updateVisibleReparam(maps, target, moved, sliceNodes=[sliceNode]) == 0
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(moved), was)


def test_the_scans_protocol_comes_from_its_dicom_header_or_its_provenance(logic, monkeypatch):
    import slicer

    t1w, _, flair = routine_nodes(logic)
    assert logic.scanProtocolOfNode(flair) == ({"sequence": "ir", **PRESETS["T2-FLAIR"].protocol.values()}, "volume's provenance")
    assert logic.scanProtocolOfNode(t1w) == ({"sequence": "se", "tr": 500.0, "te": 10.0}, "volume's provenance")
    assert logic.protocolFromDicom(t1w) == {}  # not loaded from DICOM
    nodes = _map_nodes(np.eye(3))
    dir_ = logic.synthesize(nodes["t1"], nodes["t2"], nodes["pd"], "DIR", fused=False)  # not a scan's sequence
    plain = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    assert logic.scanProtocolOfNode(dir_) == ({}, "") and logic.scanProtocolOfNode(plain) == ({}, "")
    assert logic.scanProtocolOfNode(None) == ({}, "")

    headers = {"/dicom/1.2.3": {"0018,0080": "9000", "0018,0081": "90\\95", "0018,0082": "2500", "0018,0020": "SE\\IR"}}
    asked = []
    database = types.SimpleNamespace(fileForInstance=lambda uid: asked.append(uid) or f"/dicom/{uid}",
                                     fileValue=lambda path, tag: headers.get(path, {}).get(tag, ""))
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    plain.SetAttribute("DICOM.instanceUIDs", "1.2.3 1.2.4")
    expected = {"sequence": "ir", "tr": 9000.0, "te": 90.0, "ti": 2500.0}
    assert logic.protocolFromDicom(plain) == expected and asked == ["1.2.3"]  # the first instance's header
    assert logic.scanProtocolOfNode(plain) == (expected, "DICOM header")
    headers["/dicom/1.2.3"].update({"0018,0082": "", "0018,0020": "GR"})
    with pytest.raises(InputError, match="gradient-echo"):
        logic.protocolFromDicom(plain)
    assert logic.protocolValuesFromNode(plain, "t2w") == {"tr": 9000.0, "te": 90.0}  # the routine section still reads it


def test_logic_reparam_jobs_refuse_bad_protocols_before_writing_anything(logic, temporary):
    """The scan's protocol and the direct engine's target are checked in process: a bad one starts nothing."""
    node = routine_nodes(logic)[0]
    bad = [({"sequence": "se", "tr": 500.0, "te": 600.0}, "TE must be below TR"),
           ({"sequence": "se", "tr": 500.0}, "TE"), ({}, "not known"), (Protocol("gre", 20.0, 4.0, flip=25.0), "'gre'"),
           ({"sequence": "ir", "tr": 9000.0, "te": 90.0}, "TI")]
    for protocol, message in bad:
        with pytest.raises(InputError, match=message):
            logic.reparamJob(node, protocol)
    with pytest.raises(InputError, match="direct engine"):
        logic.reparamJob(node, T1W, engine="direct", target=PRESETS["DIR"].protocol)
    with pytest.raises(InputError, match="needs a target"):
        logic.reparamJob(node, T1W, engine="direct")
    assert not any(temporary.iterdir())
    with pytest.raises(InputError, match="enter the scan's TR, TE"):
        logic.scanProtocol("se", 0.0, None)


def test_logic_reparam_jobs_write_the_scan_and_tell_the_child_everything(logic, temporary):
    from SyntheticMRILib import jobs
    from SyntheticMRILib.io.volumes import read_volume
    from SyntheticMRILib.slicer import bridge

    node = routine_nodes(logic)[2]  # the T2-FLAIR: an IR scan, its protocol as a dict
    flair = PRESETS["T2-FLAIR"].protocol
    folder, argv = logic.reparamJob(node, {"sequence": "ir", **flair.values()}, device="cpu", model="m.pt")
    assert read_volume(Path(folder) / "input.nrrd").same_grid(bridge.volume_from_node(node))
    assert argv[1:4] == ["-m", jobs.CHILD_MODULE, "reparam"]
    options = dict(zip(argv[4::2], argv[5::2])) if len(argv[4:]) % 2 == 0 else None
    assert options == {"--input": str(Path(folder) / "input.nrrd"), "--sequence": "ir", "--tr": "9000.0", "--te": "90.0",
                       "--ti": repr(float(flair.ti)), "--to-sequence": "ir", "--to-tr": "9000.0", "--to-te": "90.0",
                       "--to-ti": repr(float(flair.ti)), "--engine": "physics", "-o": str(Path(folder) / "result.nrrd"),
                       "--device": "cpu", "--progress": "lines", "--keep-maps": str(Path(folder) / "maps"), "--model": "m.pt"}
    logic.removeJobFolder(folder)
    stir = Protocol("ir", 5000.0, 60.0, 160.0)
    folder, argv = logic.reparamJob(node, flair, engine="direct", target=stir)
    assert "--keep-maps" not in argv and "--model" not in argv and argv[argv.index("--engine") + 1] == "direct"
    assert argv[argv.index("--to-ti") + 1] == "160.0"
    logic.removeJobFolder(folder)
    assert not any(temporary.iterdir())
    with pytest.raises(InputError, match="unknown engine"):
        jobs.reparam_job("python", folder, flair, engine="pixels")
    from SyntheticMRILib.models.reparam import ENGINES

    assert jobs.REPARAM_ENGINES == ENGINES  # the GUI's list, kept without importing torch


# --------------------------------------------------------------------------- installing the dependencies
def test_missing_packages_names_what_is_absent_or_too_old():
    present = lambda name: object()  # noqa: E731
    absent = lambda name: None  # noqa: E731
    assert install.missing_packages(False, present, lambda name: "2.13.0+cpu") == []
    assert install.missing_packages(True, absent, lambda name: "2.13.0") == ["torch", *install.EXTRA_REQUIREMENTS]
    assert install.missing_packages(False, present, lambda name: "1.13.1") == ["torch"]  # below TORCH_MINIMUM
    assert install.requirements(["torch", "monai"]) == ["torch>=%d.%d" % install.TORCH_MINIMUM, "monai>=1.3"]


def test_ensure_dependencies_asks_once_then_installs_torch_through_pytorch_utils(monkeypatch):
    asked, pips, torches, errors = [], [], [], []
    monkeypatch.setattr(install, "missing_packages", lambda extras=False: [] if pips else ["torch", "monai"])
    logic = SyntheticMRILogic(confirm=lambda q: asked.append(q) or True, pipInstall=pips.append,
                              installTorch=torches.append, showError=errors.append)
    assert logic.ensureDependencies(extras=True)
    assert len(asked) == 1 and "torch, monai" in asked[0]
    assert torches == ["torch>=%d.%d" % install.TORCH_MINIMUM] and pips == ["monai>=1.3"] and not errors


def test_ensure_dependencies_installs_nothing_when_declined_or_not_to_ask(monkeypatch):
    monkeypatch.setattr(install, "missing_packages", lambda extras=False: ["torch"])
    installs = []
    declined = SyntheticMRILogic(confirm=lambda q: False, pipInstall=installs.append, installTorch=installs.append)
    assert not declined.ensureDependencies() and installs == []
    silent = SyntheticMRILogic(confirm=lambda q: pytest.fail("no dialog on an automatic update"), pipInstall=installs.append)
    assert not silent.ensureDependencies(askConfirmation=False) and installs == []


def test_a_failed_install_is_shown_and_answers_false(monkeypatch):
    monkeypatch.setattr(install, "missing_packages", lambda extras=False: ["torch"])
    errors = []

    def offline(requirement):
        raise OSError("no network")

    logic = SyntheticMRILogic(confirm=lambda q: True, pipInstall=offline, installTorch=offline, showError=errors.append)
    assert not logic.ensureDependencies()
    assert errors == ["Installing torch failed: no network"]
