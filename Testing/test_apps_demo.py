"""The README's main job on the bundled sample: files, grid, and contrasts a radiologist would recognise."""
from __future__ import annotations

import numpy as np
import pytest

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.physics.protocols import PRESETS
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.io.volumes import read_volume

WM, CORTEX, VENTRICLES, THALAMUS, PALLIDUM = (2, 41), (3, 42), (4, 43), (10, 49), (13, 52)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "-o", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def labels():
    return read_volume(sample_paths()["labels"])


def _median(demo, name, labels, structure):
    """Median over a structure: robust to the partial-volume voxels at its edge."""
    return float(np.median(read_volume(demo / f"{name}.nrrd").array[np.isin(labels.array, structure)]))


def test_every_preset_on_the_sample_grid(demo, labels):
    for name in PRESETS:
        image = read_volume(demo / f"{name}.nrrd")
        assert image.same_grid(labels, tolerance=1e-9), name
        assert np.isfinite(image.array).all() and np.all(image.array[labels.array == 0] == 0), name
    montage = (demo / "montage.png").read_bytes()
    assert montage.startswith(b"\x89PNG") and len(montage) > 100_000


def test_contrasts_order_tissues_as_expected(demo, labels):
    mean = lambda name, structure: _median(demo, name, labels, structure)
    assert mean("T1w", WM) > mean("T1w", CORTEX) > mean("T1w", VENTRICLES)
    assert mean("T2w", VENTRICLES) > mean("T2w", CORTEX) > mean("T2w", WM)
    assert mean("T2-FLAIR", VENTRICLES) < 0.15 * mean("T2-FLAIR", WM)  # CSF nulled
    assert mean("T2-FLAIR", CORTEX) > mean("T2-FLAIR", WM)
    assert mean("DIR", WM) < 0.2 * mean("DIR", CORTEX) and mean("DIR", VENTRICLES) < 0.2 * mean("DIR", CORTEX)
    assert mean("WM-nulled", WM) < 0.2 * mean("WM-nulled", THALAMUS)
    assert mean("GM-nulled", CORTEX) < 0.2 * mean("GM-nulled", WM)
    assert mean("dSIR", WM) < -0.8 and mean("dSIR", CORTEX) > 0.8
    assert mean("PSIR", VENTRICLES) < mean("PSIR", CORTEX) < 0 < mean("PSIR", WM)
    assert mean("T2w", PALLIDUM) < mean("T2w", (11, 50))  # iron: pallidum darker than caudate on T2w


def test_demo_refuses_a_folder_that_is_not_empty(demo, capsys):
    before = sorted(p.name for p in demo.iterdir())
    assert main(["demo", "-o", str(demo)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in demo.iterdir()) == before


def test_scene_holds_maps_contrasts_and_named_segments(demo):
    """Unzipped, scene.mrb has a volume node per map and contrast and a segmentation with structure names."""
    import re
    import zipfile

    pytest.importorskip("slicer")
    with zipfile.ZipFile(demo / "scene.mrb") as archive:
        names = archive.namelist()
        mrml = archive.read(next(n for n in names if n.endswith(".mrml"))).decode()
        segmentation = archive.read(next(n for n in names if n.endswith(".seg.nrrd")))
    volume_names = set(re.findall(r'<Volume\b[^>]*\bname="([^"]+)"', mrml))
    assert {"T1 map (ms)", "T2 map (ms)", "PD map", *PRESETS} <= volume_names
    assert {"Sample labels", "Subcortical segmentation"} <= set(re.findall(r'<Segmentation\b[^>]*\bname="([^"]+)"', mrml))
    assert {"Learned 1", "Learned 2", "Learned 3"} <= volume_names
    header = segmentation[: segmentation.index(b"\n\n")].decode(errors="replace")
    segment_names = set(re.findall(r"Segment\d+_Name:=(.+)", header))
    for side in ("Left", "Right"):
        for structure in ("Thalamus", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "Accumbens-area"):
            assert f"{side}-{structure}" in segment_names


def test_scene_opens_on_the_maps_and_stores_contrasts_compactly(demo):
    """Loaded as Slicer loads it, scene.mrb shows the T1 map and the subcortical segmentation in a four-up layout;
    the quantitative maps are stored bit for bit, the contrasts as scaled int16 within half a quantum of the
    float contrasts the demo wrote beside it, which makes the scene about half the size of those floats."""
    import zipfile

    pytest.importorskip("slicer")
    bridge = pytest.importorskip("SyntheticMRILib.slicer.bridge")
    import slicer

    from SyntheticMRILib.io.maps import load_maps

    scene = bridge.create_scene()
    nodes = bridge.load_scene(demo / "scene.mrb", scene)
    layout = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    for view in ("Red", "Yellow", "Green"):
        composite = scene.GetSingletonNode(view, "vtkMRMLSliceCompositeNode")
        assert composite.GetBackgroundVolumeID() == nodes["T1 map (ms)"].GetID(), view
    assert nodes["Subcortical segmentation"].GetDisplayNode().GetVisibility()
    assert not nodes["Sample labels"].GetDisplayNode().GetVisibility()  # it would cover the whole head

    paths = sample_paths()
    maps = load_maps(paths["t1"], paths["t2"], paths["pd"])
    for name, array in (("T1 map (ms)", maps.t1), ("T2 map (ms)", maps.t2), ("PD map", maps.pd)):
        back = bridge.volume_from_node(nodes[name]).array
        assert back.dtype == np.float32 and back.tobytes() == np.asarray(array, np.float32).tobytes(), name
        assert nodes[name].GetAttribute(bridge.SCALE_ATTRIBUTE) is None

    files = {name: demo / f"{name}.nrrd" for name in PRESETS}
    files.update({f"Learned {k}": next(demo.glob(f"learned_{k}_*.nrrd")) for k in (1, 2, 3)})
    with zipfile.ZipFile(demo / "scene.mrb") as archive:
        stored = {info.filename: info.compress_size for info in archive.infolist()}
    for name, path in files.items():
        node, contrast = nodes[name], read_volume(path).array.astype(np.float64)
        voxels = bridge._array_from_image(node.GetImageData())
        scale = float(node.GetAttribute(bridge.SCALE_ATTRIBUTE))
        assert voxels.dtype == np.int16 and scale == pytest.approx(np.abs(contrast).max() / 32767, rel=1e-6), name
        assert np.abs(voxels * scale - contrast).max() <= scale / 2 * (1 + 1e-6), name
        assert node.GetAttribute(bridge.PROTOCOL_ATTRIBUTE), name  # provenance: sequence and parameters
        entry = next(size for entry, size in stored.items() if entry.endswith(f"/{name}.nrrd"))
        assert entry < 0.7 * path.stat().st_size, name  # vs the same contrast as compressed float32
    assert PRESETS["T2-FLAIR"].protocol.caption() in nodes["T2-FLAIR"].GetAttribute(bridge.PROTOCOL_ATTRIBUTE)
    floats = sum(path.stat().st_size for path in files.values())
    assert (demo / "scene.mrb").stat().st_size < 0.75 * floats
