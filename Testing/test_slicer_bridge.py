"""The MRML bridge against real MRML (the slicer-core wheel): exact geometry, casts, segmentations, .mrb files."""
from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):  # the unrelated PyPI package "slicer" also imports as slicer
    pytest.skip("slicer-core (real MRML) is not installed", allow_module_level=True)

import vtk  # noqa: E402  (slicer-core pins its vtk)

from conftest import rotation  # noqa: E402
from SyntheticMRILib.slicer import bridge  # noqa: E402
from SyntheticMRILib.errors import InputError  # noqa: E402
from SyntheticMRILib.io.labels import write_color_table  # noqa: E402
from SyntheticMRILib.physics.protocols import PRESETS  # noqa: E402
from SyntheticMRILib.resources import resource_path  # noqa: E402
from SyntheticMRILib.io.volumes import Volume, read_volume  # noqa: E402

SUBCORTICAL = (10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58)


GRIDS = {
    # rotated ~20 degrees about two axes
    "oblique": dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.25, 7.0), direction=tuple(rotation(20, 22).ravel())),
    # one axis flipped (det = -1), also oblique
    "left-handed": dict(spacing=(1.25, 0.75, 3.0), origin=(-101.5, 88.125, -40.0),
                        direction=tuple((rotation(-15, 30) @ np.diag([1.0, -1.0, 1.0])).ravel())),
}


def grid_volume(kind: str, array: np.ndarray) -> Volume:
    return Volume(array, **GRIDS[kind])


def random_map(shape=(7, 9, 11), seed=0) -> np.ndarray:
    array = np.random.default_rng(seed).uniform(300, 4000, shape).astype(np.float32)
    array[0] = 0  # background slab
    return array


def label_phantom(shape=(8, 10, 12)) -> np.ndarray:
    """Blocks of the 14 subcortical labels plus a few others, on a background of head tissue."""
    labels = np.full(shape, 258, np.int16)
    labels[0] = 0
    values = SUBCORTICAL + (2, 41, 4, 77, 165, 251)
    flat = labels[1:].reshape(-1)
    flat[: len(values) * 20] = np.repeat(values, 20)
    labels[1:] = flat.reshape(labels[1:].shape)
    return labels


def assert_same_grid(a: Volume, b: Volume) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.direction, b.direction, rtol=0, atol=1e-9)


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture
def scene():
    return bridge.create_scene()


@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_volume_round_trip_is_exact(scene, kind):
    volume = grid_volume(kind, random_map())
    node = bridge.node_from_volume(volume, f"map {kind}", scene=scene)
    np.testing.assert_allclose(ijk_to_ras(node), volume.ijk_to_ras(), rtol=0, atol=1e-12)
    back = bridge.volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == np.float32
    assert_same_grid(back, volume)
    assert (np.linalg.det(np.reshape(back.direction, (3, 3))) < 0) == (kind == "left-handed")


def test_update_in_place_keeps_node_and_user_window(scene):
    volume = grid_volume("oblique", random_map())
    node = bridge.node_from_volume(volume, "preview", scene=scene)
    display = node.GetDisplayNode()
    assert not display.GetAutoWindowLevel() and display.GetWindow() > 0
    display.SetWindowLevel(123.0, 45.0)
    again = bridge.node_from_volume(volume.with_array(volume.array * 2), "preview", node=node)
    assert again is node and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    np.testing.assert_array_equal(bridge.volume_from_node(node).array, volume.array * 2)
    assert (display.GetWindow(), display.GetLevel()) == (123.0, 45.0)
    bridge.node_from_volume(volume.with_array(volume.array / 1000), "preview", node=node, window_level="auto")
    assert display.GetWindow() < 5  # recomputed for the new intensity scale


@pytest.mark.parametrize("dtype, expected", [(np.int64, np.int32), (np.bool_, np.uint8), (np.float64, np.float32),
                                             (np.float16, np.float32), (np.uint16, np.uint16)])
def test_unsupported_scalar_types_are_cast_with_values_kept(scene, dtype, expected):
    values = label_phantom() if dtype is not np.bool_ else label_phantom() > 20
    volume = grid_volume("left-handed", values.astype(dtype))
    back = bridge.volume_from_node(bridge.node_from_volume(volume, "cast", scene=scene))
    assert back.array.dtype == expected
    np.testing.assert_array_equal(back.array, volume.array.astype(expected))


def test_int64_out_of_range_is_refused(scene):
    with pytest.raises(InputError, match="32-bit"):
        bridge.node_from_volume(grid_volume("oblique", np.full((2, 2, 2), 2**40, np.int64)), "big", scene=scene)


def test_maps_from_nodes(scene):
    arrays = {"t1": random_map(seed=1), "t2": random_map(seed=2) / 20, "pd": random_map(seed=3) / 4000 * 90}
    nodes = [bridge.node_from_volume(grid_volume("left-handed", a), k, scene=scene) for k, a in arrays.items()]
    maps = bridge.maps_from_nodes(*nodes)
    np.testing.assert_array_equal(maps.t1, arrays["t1"])
    np.testing.assert_allclose(maps.pd, arrays["pd"] / 100, rtol=1e-6)  # PD given in percent
    assert_same_grid(maps.grid, grid_volume("left-handed", arrays["t1"]))


def test_label_table_codes_and_terminology_json_agree():
    table = bridge.label_table()
    for value in SUBCORTICAL + (2, 41, 3, 42, 4, 5, 43, 44, 14, 15, 24, 7, 8, 46, 47, 16, 28, 60, 30, 62, 31, 63,
                                77, 80, 85, 251, 252, 253, 254, 255, 165, 258):
        assert value in table, value
    assert table[10].name == "Left-Thalamus" and table[10].color == (0, 118, 14)
    assert "SCT^42695009^Thalamus~SCT^7771000^Left" in table[10].terminology
    assert "SCT^5366008^Hippocampus~SCT^24028007^Right" in table[53].terminology
    phantom = pytest.importorskip("SyntheticMRILib.phantoms.head")
    for value, name in phantom.HEAD_LABEL_NAMES.items():  # the sample's head labels
        assert table[value].name == name
    with open(resource_path("Terminology", "labels.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    context = json.loads(resource_path("Terminology", "SyntheticMRI.term.json").read_text())
    assert context["SegmentationCategoryTypeContextName"] == bridge.TERMINOLOGY_CONTEXT
    coded = {(c["CodeValue"], t["CodeValue"], m["CodeValue"] if m else "")
             for c in context["SegmentationCodes"]["Category"] for t in c["Type"] for m in t.get("Modifier", [None])}
    for row in rows:  # every row of the table can be picked in Slicer's terminology selector
        assert (row["Category_CodeValue"], row["Type_CodeValue"], row["TypeModifier_CodeValue"]) in coded, row["Name"]


def test_terminology_files_load_in_slicer(scene):
    logic = bridge._terminology_logic(scene)
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    assert bridge.TERMINOLOGY_CONTEXT in {names.GetValue(i) for i in range(names.GetNumberOfValues())}
    assert logic.GetNumberOfCategoriesInTerminology(bridge.TERMINOLOGY_CONTEXT) == 3
    # labels.csv is also a Slicer color table with terminology
    storage = scene.AddNewNodeByClass("vtkMRMLColorTableStorageNode")
    storage.SetFileName(str(resource_path("Terminology", "labels.csv")))
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "FreeSurfer")
    assert storage.ReadData(colors)
    assert colors.GetColorName(49) == "Right-Thalamus"
    assert "~SCT^123037004^Anatomical Structure~SCT^42695009^Thalamus~SCT^24028007^Right~" in colors.GetTerminologyAsString(49)


def _ctbl_rows(text: str) -> list:
    """(value, name, R, G, B, A) of each line of a Slicer .ctbl colour table (``value name r g b a``)."""
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            value, name, *rgba = line.split()
            rows.append((int(value), name, *map(int, rgba)))
    return rows


def test_shipped_ctbl_is_labels_csv_for_slicer_before_5_10(tmp_path, scene):
    """Slicer reads CSV colour tables only from 5.10 on; labels.ctbl is the same table for 5.6/5.8, written by
    the library's own writer, so it cannot drift from labels.csv."""
    shipped = resource_path("Terminology", "labels.ctbl")
    expected = write_color_table(tmp_path / "labels.ctbl", list(bridge.label_table()))
    assert shipped.read_text() == expected.read_text(), (
        "labels.ctbl is stale; regenerate it: python -c \"from SyntheticMRILib.io.labels import label_table, "
        "write_color_table; write_color_table('Resources/Terminology/labels.ctbl', list(label_table()), overwrite=True)\"")
    with open(resource_path("Terminology", "labels.csv"), newline="") as handle:
        csv_rows = [(int(r["LabelValue"]), r["Name"], int(r["Color_R"]), int(r["Color_G"]), int(r["Color_B"]),
                     int(r["Color_A"])) for r in csv.DictReader(handle)]
    rows = _ctbl_rows(shipped.read_text())
    assert rows[0] == (0, "Unknown", 0, 0, 0, 0)  # transparent background, as in FreeSurferColorLUT
    assert sorted(rows[1:]) == sorted(csv_rows)
    # and MRML's colour-table reader (the one Slicer 5.8 uses for .ctbl) gives the same colours and names, but
    # for the format's one quirk: "_" in a name stands for a space (CC_Posterior reads as "CC Posterior")
    storage = scene.AddNewNodeByClass("vtkMRMLColorTableStorageNode")
    storage.SetFileName(str(shipped))
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "FreeSurfer (ctbl)")
    assert storage.ReadData(colors)
    assert colors.GetNumberOfColors() == max(value for value, *_ in csv_rows) + 1
    for value, name, *rgba in csv_rows:
        assert colors.GetColorName(value) == name.replace("_", " ")
        color = [0.0] * 4
        colors.GetColor(value, color)
        np.testing.assert_allclose(color, np.array(rgba) / 255, atol=1e-9)


@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_labels_to_segmentation_and_back(scene, kind):
    labels = grid_volume(kind, label_phantom())
    reference = bridge.node_from_volume(labels.with_array(random_map(labels.array.shape)), "reference", scene=scene)
    node = bridge.segmentation_from_labels(labels, reference, scene=scene)
    segmentation = node.GetSegmentation()
    present = sorted(int(v) for v in np.unique(labels.array) if v)
    table = bridge.label_table()
    assert list(segmentation.GetSegmentIDs()) == [table[v].name for v in present]
    for value in present:
        segment = segmentation.GetSegment(table[value].name)
        assert segment.GetName() == table[value].name
        np.testing.assert_allclose(segment.GetColor(), np.array(table[value].color) / 255, atol=1e-9)
        assert bridge.segment_tag(segment, "TerminologyEntry") == table[value].terminology
    putamen = bridge.segment_tag(segmentation.GetSegment("Right-Putamen"), "TerminologyEntry")
    assert "~SCT^123037004^Anatomical Structure~SCT^89278009^Putamen~SCT^24028007^Right~" in putamen
    back = bridge.labels_from_segmentation(node, reference)
    np.testing.assert_array_equal(back.array, labels.array)
    assert_same_grid(back, labels)


def test_segmentation_joins_the_reference_folder(scene):
    labels = grid_volume("oblique", label_phantom())
    reference = bridge.node_from_volume(labels.with_array(random_map(labels.array.shape)), "reference", scene=scene)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Study")
    hierarchy.CreateItem(study, reference)  # the Slicer GUI would have made the item
    node = bridge.segmentation_from_labels(labels, reference, scene=scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study


def test_closed_surfaces_can_be_made(scene):
    """create_scene registered the labelmap -> closed surface converter (3-D display in Slicer)."""
    labels = grid_volume("left-handed", label_phantom((12, 14, 16)))
    node = bridge.segmentation_from_labels(labels, scene=scene)
    assert node.CreateClosedSurfaceRepresentation()
    surface = node.GetSegmentation().GetSegment("Left-Thalamus").GetRepresentation("Closed surface")
    assert surface is not None and surface.GetNumberOfPoints() > 0


def test_renamed_and_user_segments_export(scene):
    labels = grid_volume("oblique", label_phantom())
    reference = bridge.node_from_volume(labels.with_array(random_map(labels.array.shape)), "reference", scene=scene)
    node = bridge.segmentation_from_labels(labels, reference, scene=scene)
    node.GetSegmentation().GetSegment("Left-Thalamus").SetName("my thalamus")  # the label tag still knows it
    back = bridge.labels_from_segmentation(node, reference)
    np.testing.assert_array_equal(back.array, labels.array)


def test_unknown_labels_get_names_and_colors(scene):
    labels = grid_volume("oblique", np.where(label_phantom() == 258, 999, label_phantom()).astype(np.int32))
    node = bridge.segmentation_from_labels(labels, scene=scene)  # reference: the labels' own grid
    segment = node.GetSegmentation().GetSegment("Label-999")
    assert segment is not None and segment.GetLabelValue() == 999
    reference = bridge.node_from_volume(labels, "grid", scene=scene)
    np.testing.assert_array_equal(bridge.labels_from_segmentation(node, reference).array, labels.array)


def test_mrb_round_trip(tmp_path):
    volumes = {"T1 map": grid_volume("left-handed", random_map(seed=4)),
               "FLAIR": grid_volume("left-handed", random_map(seed=5) / 7)}
    labels = grid_volume("left-handed", label_phantom(random_map().shape))
    path = bridge.write_scene_mrb(tmp_path / "scene.mrb", volumes, {"Labels": labels})
    with pytest.raises(InputError, match="exists"):
        bridge.write_scene_mrb(path, volumes, {"Labels": labels})
    bridge.write_scene_mrb(path, volumes, {"Labels": labels}, overwrite=True)

    loaded = bridge.load_scene(path, bridge.create_scene())
    assert set(loaded) == {"T1 map", "FLAIR", "Labels"}
    for name, volume in volumes.items():
        back = bridge.volume_from_node(loaded[name])
        np.testing.assert_array_equal(back.array, volume.array)
        assert back.array.dtype == volume.array.dtype and back.array.tobytes() == volume.array.tobytes()
        assert_same_grid(back, volume)
        display = loaded[name].GetDisplayNode()
        assert not display.GetAutoWindowLevel() and display.GetWindow() > 0  # the written window/level
    segmentation = loaded["Labels"].GetSegmentation()
    hippocampus = segmentation.GetSegment("Left-Hippocampus")
    assert bridge.segment_tag(hippocampus, "TerminologyEntry") == bridge.label_table()[17].terminology
    back = bridge.labels_from_segmentation(loaded["Labels"], loaded["T1 map"])
    np.testing.assert_array_equal(back.array, labels.array)


def _slice_views(scene) -> dict:
    """Layout name -> (slice node, slice composite node) of the Red, Yellow and Green views."""
    return {name: (scene.GetSingletonNode(name, "vtkMRMLSliceNode"), scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode"))
            for name in ("Red", "Yellow", "Green")}


def _viewer_scene():
    """A scene as the Slicer application has it before a scene is dropped on it: its layout, slice views with
    their composite nodes, and a volume already loaded (whose node ID the scene file uses too)."""
    scene = bridge.create_scene()
    layout = slicer.vtkMRMLLayoutLogic()
    layout.SetMRMLScene(scene)
    layout.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    for name in ("Red", "Yellow", "Green"):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)  # also its singleton tag, as the slice logic makes it
        scene.AddNode(composite)
    earlier = bridge.node_from_volume(grid_volume("oblique", random_map(seed=9)), "already loaded", scene=scene)
    for _, composite in _slice_views(scene).values():
        composite.SetBackgroundVolumeID(earlier.GetID())
    return scene


def _scene_with_views(path, **options):
    volumes = {"T1 map": grid_volume("left-handed", random_map(seed=4)),
               "FLAIR": grid_volume("left-handed", random_map(seed=5) / 7)}
    labels = {"Labels": grid_volume("left-handed", label_phantom(random_map().shape)),
              "Other labels": grid_volume("left-handed", label_phantom(random_map().shape))}
    focus = grid_volume("left-handed", random_map()).ijk_to_ras() @ np.array([4.0, 3.0, 2.0, 1.0])
    lps = (-focus[0], -focus[1], focus[2])
    return bridge.write_scene_mrb(path, volumes, labels, background="T1 map", visible_segmentations=["Labels"],
                                  focus_lps=lps, **options), volumes, focus[:3]


def test_mrb_opens_on_the_background_and_the_segmentation(tmp_path):
    """The scene file carries the view state Slicer restores on load: a four-up layout, the Red/Yellow/Green
    slice views showing the background volume through the focus point, and the chosen segmentation visible."""
    path, volumes, focus = _scene_with_views(tmp_path / "scene.mrb")
    with zipfile.ZipFile(path) as archive:
        mrml = archive.read(next(n for n in archive.namelist() if n.endswith(".mrml"))).decode()
    assert mrml.count('references="backgroundVolume:vtkMRMLScalarVolumeNode1;"') == 3  # the T1 map's ID in the file
    for scene in (bridge.create_scene(), _viewer_scene()):  # a bare scene, and one like Slicer's with data in it
        loaded = bridge.load_scene(path, scene)
        t1 = loaded["T1 map"]
        if "already loaded" in loaded:  # that volume holds the file's ID: the views must follow the T1 map's new ID
            assert loaded["already loaded"].GetID() == "vtkMRMLScalarVolumeNode1" != t1.GetID()
        layouts = scene.GetNodesByClass("vtkMRMLLayoutNode")
        assert layouts.GetNumberOfItems() == 1  # the file's layout went into the one singleton
        assert layouts.GetItemAsObject(0).GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
        for name, (slice_node, composite) in _slice_views(scene).items():
            assert composite is not None and slice_node is not None, name
            assert composite.GetBackgroundVolumeID() == t1.GetID(), name  # the file's IDs follow the loaded nodes
            to_ras = bridge.slice_to_ras(slice_node)
            assert abs(np.dot(focus - to_ras[:3, 3], to_ras[:3, 2])) < 1e-3, name  # through focus (MRML writes 6 digits)
        assert scene.GetNodesByClass("vtkMRMLSliceCompositeNode").GetNumberOfItems() == 3
        assert [_slice_views(scene)[n][0].GetOrientation() for n in ("Red", "Yellow", "Green")] == \
            ["Axial", "Sagittal", "Coronal"]
        selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        assert selection.GetActiveVolumeID() == t1.GetID()
        assert loaded["Labels"].GetDisplayNode().GetVisibility()
        assert not loaded["Other labels"].GetDisplayNode().GetVisibility()


def test_mrb_refuses_unknown_view_names(tmp_path):
    volumes = {"T1 map": grid_volume("left-handed", random_map(seed=4))}
    with pytest.raises(InputError, match="Nope"):
        bridge.write_scene_mrb(tmp_path / "a.mrb", volumes, background="Nope")
    with pytest.raises(InputError, match="Nope"):
        bridge.write_scene_mrb(tmp_path / "b.mrb", volumes, scaled=["Nope"])
    assert not list(tmp_path.iterdir())


def test_mrb_stores_scaled_volumes_as_int16(tmp_path):
    """Volumes named in ``scaled`` are stored as int16 with float = int16 * scale (node attribute); the others
    (the quantitative maps) bit for bit; node attributes travel with the nodes."""
    signed = grid_volume("left-handed", random_map(seed=6) / 4000 - 0.4)  # a phase-sensitive contrast has both signs
    volumes = {"T1 map": grid_volume("left-handed", random_map(seed=4)),
               "FLAIR": grid_volume("left-handed", random_map(seed=5) / 7000), "PSIR": signed}
    path = bridge.write_scene_mrb(tmp_path / "scene.mrb", volumes, scaled=["FLAIR", "PSIR"],
                                  attributes={"FLAIR": {bridge.PROTOCOL_ATTRIBUTE: "ir TR 9000 TE 90 TI 2500"}})
    loaded = bridge.load_scene(path, bridge.create_scene())
    t1 = bridge.volume_from_node(loaded["T1 map"])
    assert t1.array.dtype == np.float32 and t1.array.tobytes() == volumes["T1 map"].array.tobytes()
    assert loaded["T1 map"].GetAttribute(bridge.SCALE_ATTRIBUTE) is None
    for name in ("FLAIR", "PSIR"):
        node, original = loaded[name], volumes[name].array.astype(np.float64)
        stored = bridge._array_from_image(node.GetImageData())
        assert stored.dtype == np.int16, name
        scale = float(node.GetAttribute(bridge.SCALE_ATTRIBUTE))
        peak = np.abs(original).max()
        assert scale == pytest.approx(peak / 32767, rel=1e-12)  # the whole int16 range is used
        error = np.abs(stored * scale - original)
        assert error.max() <= scale / 2 * (1 + 1e-9), name  # rounding to the nearest quantum
        back = bridge.volume_from_node(node)  # the bridge hands out values in the original units
        assert back.array.dtype == np.float32
        np.testing.assert_allclose(back.array, original, rtol=0, atol=scale / 2 * 1.001)
        assert_same_grid(back, volumes[name])
        display = node.GetDisplayNode()
        assert not display.GetAutoWindowLevel() and 1000 < display.GetWindow() <= 65535  # in stored (int16) units
    assert (bridge._array_from_image(loaded["PSIR"].GetImageData()) < 0).any()
    assert loaded["FLAIR"].GetAttribute(bridge.PROTOCOL_ATTRIBUTE) == "ir TR 9000 TE 90 TI 2500"


def test_new_voxels_in_a_scaled_node_drop_its_scale(tmp_path, scene):
    """A stored int16 contrast overwritten by a synthesis holds float values again: the scale would now be
    wrong, and the window (in int16 units) too. The live preview cannot write floats into int16 voxels and
    leaves such a node to the whole-volume update."""
    volume = grid_volume("oblique", random_map(seed=7) / 4000)
    path = bridge.write_scene_mrb(tmp_path / "scene.mrb", {"FLAIR": volume}, scaled=["FLAIR"])
    node = bridge.load_scene(path, scene)["FLAIR"]
    maps = bridge.maps_from_nodes(*(bridge.node_from_volume(grid_volume("oblique", random_map(seed=s) * f), n, scene=scene)
                                    for s, f, n in ((1, 1, "t1"), (2, 0.05, "t2"), (3, 1 / 4000, "pd"))))
    center = volume.ijk_to_ras() @ np.r_[(np.array(volume.array.shape[::-1]) - 1) / 2, 1.0]
    slice_node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.GetSliceToRAS().SetElement(0, 3, center[0])
    slice_node.GetSliceToRAS().SetElement(1, 3, center[1])
    slice_node.GetSliceToRAS().SetElement(2, 3, center[2])
    protocol = PRESETS["T1w"].protocol
    stored = bridge._array_from_image(node.GetImageData())
    assert bridge.update_visible_slices(maps, maps.tensors(), protocol, node, [slice_node]) == 0
    np.testing.assert_array_equal(bridge._array_from_image(node.GetImageData()), stored)
    control = bridge.node_from_volume(volume, "float", scene=scene)  # the same plane does reach a float node
    assert bridge.update_visible_slices(maps, maps.tensors(), protocol, control, [slice_node]) == 1
    old_window = node.GetDisplayNode().GetWindow()
    bridge.node_from_volume(volume, "FLAIR", node=node)
    assert node.GetAttribute(bridge.SCALE_ATTRIBUTE) is None
    np.testing.assert_array_equal(bridge.volume_from_node(node).array, volume.array)
    assert node.GetDisplayNode().GetWindow() < old_window / 1000  # recomputed for float values


def test_save_scene_of_an_existing_scene(tmp_path, scene):
    volume = grid_volume("oblique", random_map())
    bridge.node_from_volume(volume, "map", scene=scene)
    path = bridge.save_scene(tmp_path / "nested" / "mine.mrb", scene)
    loaded = bridge.load_scene(path, bridge.create_scene())
    np.testing.assert_array_equal(bridge.volume_from_node(loaded["map"]).array, volume.array)
    with pytest.raises(InputError, match=".mrb"):
        bridge.save_scene(tmp_path / "mine.mrml", scene)


def test_linear_parent_transform_is_folded_into_the_grid(scene):
    volume = grid_volume("oblique", random_map())
    node = bridge.node_from_volume(volume, "moved", scene=scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # 10 mm to the right (RAS) = -10 mm in L (LPS)
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = bridge.volume_from_node(node)
    np.testing.assert_allclose(moved.origin, np.add(volume.origin, (-10.0, 0, 0)), atol=1e-9)
    np.testing.assert_allclose(moved.direction, volume.direction, atol=1e-12)


def test_no_scene_outside_slicer_is_a_clear_error():
    if getattr(slicer, "mrmlScene", None) is not None:
        pytest.skip("running inside Slicer")
    with pytest.raises(InputError, match="create_scene"):
        bridge.node_from_volume(grid_volume("oblique", random_map()), "x")


def test_load_sample(scene):
    try:
        paths = [resource_path("SampleData", f"{name}.nrrd") for name in ("t1", "t2", "pd", "labels")]
    except InputError:
        pytest.skip("the bundled sample is not built yet")
    nodes = bridge.load_sample(scene)
    assert set(nodes) == {"t1", "t2", "pd", "segmentation"}
    maps = bridge.maps_from_nodes(nodes["t1"], nodes["t2"], nodes["pd"])
    assert maps.t1.shape == bridge.volume_from_node(nodes["t1"]).array.shape
    segment_ids = set(nodes["segmentation"].GetSegmentation().GetSegmentIDs())
    table = bridge.label_table()
    assert {table[v].name for v in SUBCORTICAL} <= segment_ids
    labels = read_volume(paths[3])
    assert all(int(v) in table for v in np.unique(labels.array) if v)  # every sample label has terminology
    np.testing.assert_array_equal(bridge.labels_from_segmentation(nodes["segmentation"], nodes["t1"]).array, labels.array)


def test_a_contrast_node_carries_the_provenance_of_a_file_header(scene):
    """node_from_contrast sets one attribute per provenance key, named as the header fields of a file
    (SyntheticMRI.Sequence, .TR_ms, ...); a new contrast in the same node replaces them all, stale ones included."""
    from SyntheticMRILib.io.provenance import PARAMETER_KEYS, PROTOCOL_KEY, PROVENANCE_KEYS, SCALE_KEY, Provenance

    assert bridge.PROTOCOL_ATTRIBUTE == PROTOCOL_KEY and bridge.SCALE_ATTRIBUTE == SCALE_KEY  # one naming scheme
    volume = grid_volume("oblique", random_map(seed=8) / 4000)
    flair = Provenance.of_preset(PRESETS["T2-FLAIR"])
    node = bridge.node_from_contrast(volume, flair.protocol, scene=scene, provenance=flair)
    attributes = {key: node.GetAttribute(key) for key in PROVENANCE_KEYS if node.GetAttribute(key) is not None}
    assert attributes == flair.fields() and Provenance.from_fields(attributes) == flair
    assert node.GetAttribute(bridge.PROTOCOL_ATTRIBUTE) == f"ir {PRESETS['T2-FLAIR'].protocol.caption()}"
    spin_echo = PRESETS["T1w"].protocol
    bridge.node_from_contrast(volume, spin_echo, node=node)  # no provenance given: the protocol's own
    attributes = {key: node.GetAttribute(key) for key in PROVENANCE_KEYS if node.GetAttribute(key) is not None}
    assert attributes == Provenance(spin_echo).fields()
    assert node.GetAttribute(PARAMETER_KEYS["ti"]) is None and node.GetAttribute("SyntheticMRI.Preset") is None
