"""The README's main job on the bundled sample: files, grid, and contrasts a radiologist would recognise."""
from __future__ import annotations

import numpy as np
import pytest

from SyntheticMRILib import __version__
from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.apps.demo import SCENE_CONTRASTS
from SyntheticMRILib.io.provenance import SCALE_KEY, Provenance, read_provenance
from SyntheticMRILib.physics.protocols import PRESETS
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.io.volumes import COMPACT_BITS, read_header, read_volume

WM, CORTEX, VENTRICLES, THALAMUS, PALLIDUM = (2, 41), (3, 42), (4, 43), (10, 49), (13, 52)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "-o", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def labels():
    return read_volume(sample_paths()["labels"])


def _contrast_files(demo):
    """Every contrast the demo writes, by its name in the scene and the montage."""
    files = {name: demo / f"{name}.nrrd" for name in PRESETS}
    files.update({f"Learned {k}": next(demo.glob(f"learned_{k}_*.nrrd")) for k in (1, 2, 3)})
    return files


def _synthesized(protocol):
    """The float32 contrast of ``protocol`` on the sample, computed here (what --storage float32 would store)."""
    import torch

    from SyntheticMRILib.io.maps import load_maps
    from SyntheticMRILib.physics.synthesis import synthesize_volume

    paths = sample_paths()
    t1, t2, pd = load_maps(paths["t1"], paths["t2"], paths["pd"]).tensors(torch.device("cpu"))
    return synthesize_volume(t1, t2, pd, protocol).numpy()


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


def test_every_contrast_file_carries_its_provenance(demo):
    """Each file says which protocol made it, exactly: presets by name with the 3 T table of their null points,
    learned contrasts with every digit of their parameters (re-synthesizing from the header gives the file back)."""
    from SyntheticMRILib.models.segmenter import load_model

    for name, preset in PRESETS.items():
        assert read_provenance(demo / f"{name}.nrrd") == Provenance.of_preset(preset), name
    learned = load_model().contrast.protocols()
    for k, protocol in enumerate(learned, start=1):
        provenance = read_provenance(_contrast_files(demo)[f"Learned {k}"])
        assert provenance.preset is None and provenance.table_field is None and provenance.version == __version__
        assert provenance.protocol.sequence == protocol.sequence
        for parameter, value in protocol.values().items():
            assert getattr(provenance.protocol, parameter) == float(value), (k, parameter)


def test_contrasts_are_stored_as_12_bit_integers_within_half_a_quantum(demo):
    """int16 on disk with the scale in the header (largest magnitude = 4095); read back, each contrast is within
    half a quantum of the float contrast synthesized from the protocol its header records."""
    files = _contrast_files(demo)
    for name, path in files.items():
        header = read_header(path)
        assert header.pixel_type == "16-bit signed integer" and SCALE_KEY in header.metadata, name
    for name in ("T2-FLAIR", "dSIR", "T1w-GRE", "Learned 3"):  # IR, signed, gradient echo, learned
        exact = _synthesized(read_provenance(files[name]).protocol).astype(np.float64)
        scale = float(read_header(files[name]).metadata[SCALE_KEY])
        assert scale == pytest.approx(np.abs(exact).max() / (2 ** COMPACT_BITS - 1), rel=1e-6), name
        assert np.abs(read_volume(files[name]).array - exact).max() <= scale / 2 * (1 + 1e-3), name  # float32


def test_demo_folder_is_compact(demo):
    """The folder's size, bounded by what it stores rather than by a number: each contrast file under 0.8 bytes
    per voxel (12-bit integers take ~0.6 after compression, float32 1.2-1.6), and the folder under the contrast
    files, the scene's maps (no larger than the sample's own files), 0.8 bytes per voxel for each contrast the
    scene holds, and 3 MB for the montage and the segmentations. A scene holding every contrast again, or float
    contrasts, would exceed it by tens of megabytes."""
    voxels = int(np.prod(read_header(sample_paths()["t1"]).size))
    files = _contrast_files(demo)
    for name, path in files.items():
        assert path.stat().st_size < 0.8 * voxels, name
    maps = sum(sample_paths()[name].stat().st_size for name in ("t1", "t2", "pd", "labels"))
    total = sum(path.stat().st_size for path in demo.rglob("*") if path.is_file())
    bound = sum(path.stat().st_size for path in files.values()) + maps + 0.8 * voxels * len(SCENE_CONTRASTS) + 3e6
    assert total < bound, f"{total / 1e6:.1f} MB > {bound / 1e6:.1f} MB"


def test_scene_holds_maps_a_few_contrasts_and_named_segments(demo):
    """Unzipped, scene.mrb has a volume node per map and per contrast of SCENE_CONTRASTS (the module makes the
    others from the maps; every contrast is a file beside the scene) and segmentations with structure names."""
    import re
    import zipfile

    pytest.importorskip("slicer")
    with zipfile.ZipFile(demo / "scene.mrb") as archive:
        names = archive.namelist()
        mrml = archive.read(next(n for n in names if n.endswith(".mrml"))).decode()
        segmentation = archive.read(next(n for n in names if n.endswith(".seg.nrrd")))
    volume_names = set(re.findall(r'<Volume\b[^>]*\bname="([^"]+)"', mrml))
    assert volume_names == {"T1 map (ms)", "T2 map (ms)", "PD map", *SCENE_CONTRASTS}
    assert set(SCENE_CONTRASTS) <= set(PRESETS)
    assert {"Sample labels", "Subcortical segmentation"} <= set(re.findall(r'<Segmentation\b[^>]*\bname="([^"]+)"', mrml))
    header = segmentation[: segmentation.index(b"\n\n")].decode(errors="replace")
    segment_names = set(re.findall(r"Segment\d+_Name:=(.+)", header))
    for side in ("Left", "Right"):
        for structure in ("Thalamus", "Caudate", "Putamen", "Pallidum", "Hippocampus", "Amygdala", "Accumbens-area"):
            assert f"{side}-{structure}" in segment_names


def test_scene_opens_on_the_maps_and_stores_contrasts_compactly(demo):
    """Loaded as Slicer loads it, scene.mrb shows the T1 map and the subcortical segmentation in a four-up layout;
    the quantitative maps are stored exactly (T1 and T2, integer ms in the sample, as uint16: no larger than the
    sample's files), the contrasts as the files beside it store them: the same 12-bit integers and scale, within
    half a quantum of the float contrast, with their provenance as node attributes."""
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
    with zipfile.ZipFile(demo / "scene.mrb") as archive:
        stored = {info.filename: info.compress_size for info in archive.infolist()}
    entry = lambda name: next(size for path, size in stored.items() if path.startswith(f"scene/Data/{name}."))
    for name, array, key in (("T1 map (ms)", maps.t1, "t1"), ("T2 map (ms)", maps.t2, "t2"), ("PD map", maps.pd, "pd")):
        back = bridge.volume_from_node(nodes[name]).array
        assert back.astype(np.float32).tobytes() == np.asarray(array, np.float32).tobytes(), name  # exact values
        assert back.dtype == (np.float32 if key == "pd" else np.uint16), name
        assert nodes[name].GetAttribute(bridge.SCALE_ATTRIBUTE) is None
        assert entry(name) <= 1.02 * paths[key].stat().st_size, name

    from SyntheticMRILib.io.provenance import PROVENANCE_KEYS

    for name in SCENE_CONTRASTS:
        node, path = nodes[name], demo / f"{name}.nrrd"
        voxels = bridge._array_from_image(node.GetImageData())
        scale = float(node.GetAttribute(bridge.SCALE_ATTRIBUTE))
        assert voxels.dtype == np.int16 and scale == float(read_header(path).metadata[SCALE_KEY]), name
        assert np.array_equal(bridge.volume_from_node(node).array, read_volume(path).array), name  # the file's values
        exact = _synthesized(PRESETS[name].protocol).astype(np.float64)
        assert np.abs(voxels * scale - exact).max() <= scale / 2 * (1 + 1e-3), name  # float32
        attributes = {key: node.GetAttribute(key) for key in PROVENANCE_KEYS if node.GetAttribute(key) is not None}
        assert attributes == Provenance.of_preset(PRESETS[name]).fields(), name  # as in the file's header
        assert entry(name) <= 1.02 * path.stat().st_size, name  # stored as compactly as the file
    assert PRESETS["T2-FLAIR"].protocol.caption() in nodes["T2-FLAIR"].GetAttribute(bridge.PROTOCOL_ATTRIBUTE)


def _overlap(a, b, pixels: float = 0.5) -> bool:
    """Whether two boxes share more than a boundary (stacked lines of text touch)."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > pixels and min(a.y1, b.y1) - max(a.y0, b.y0) > pixels


def test_montage_reads_at_the_readme_width(demo):
    """The README shows montage.png at most README_WIDTH_PX wide (GitHub). At that width every title and caption
    of the demo's panels is at least 12 px high (measured on the drawn figure), and none touches an image or
    another text: the long captions (DIR, dSIR, learned contrasts, the segmentation) wrap within their panel."""
    import struct

    import matplotlib.pyplot as plt

    from SyntheticMRILib.apps.demo import _title
    from SyntheticMRILib.io.figures import README_WIDTH_PX, Panel, montage_figure
    from SyntheticMRILib.io.volumes import Volume
    from SyntheticMRILib.physics.protocols import Protocol

    width, height = struct.unpack(">II", (demo / "montage.png").read_bytes()[16:24])
    assert width == 2 * README_WIDTH_PX and height < width  # drawn at twice the README width, for sharpness

    rng = np.random.default_rng(0)
    volume = Volume(rng.uniform(0.1, 1, (30, 36, 33)).astype(np.float32), (1.0, 1.0, 1.2), (0.0, 0.0, 0.0),
                    (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    learned = Protocol("ir", 10787.2421875, 107.17829895019531, 2465.40185546875)
    panels = [Panel(_title(name, p.protocol), p.protocol.caption(), volume) for name, p in PRESETS.items()]
    panels += [Panel(_title(f"Learned {k}", learned), learned.caption(), volume) for k in (1, 2, 3)]
    panels.append(Panel("Segmentation", "learned contrasts + U-Net, mean Dice 0.90", volume,
                        overlay=volume.with_array(np.full(volume.array.shape, 10, np.int16))))
    fig = montage_figure(panels, title="SyntheticMRI on the bundled sample (3 T): every preset, the learned "
                                       "contrasts and the segmentation")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        shown = README_WIDTH_PX / (fig.get_figwidth() * fig.dpi)  # README pixels per figure pixel
        assert shown == pytest.approx(0.5)
        texts = [t for t in fig.texts if t.get_text()]
        assert len(texts) >= 2 * len(panels)  # a title and a caption per panel
        boxes = [t.get_window_extent(renderer) for t in texts]
        for text, box in zip(texts, boxes):
            lines = text.get_text().count("\n") + 1
            assert text.get_fontsize() * fig.dpi / 72 * shown >= 12, text.get_text()
            assert box.height / lines * shown >= 12, text.get_text()  # drawn line height, as shown in the README
            assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0 and box.y1 <= fig.bbox.height
        images = [ax.get_window_extent(renderer) for ax in fig.axes]
        assert len(images) == 3 * len(panels)
        for text, box in zip(texts, boxes):
            assert not any(_overlap(box, image) for image in images), text.get_text()
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert not _overlap(boxes[i], boxes[j]), (texts[i].get_text(), texts[j].get_text())
        assert any("TI2 587" in t.get_text() for t in texts)  # a number stays with its parameter when wrapping
    finally:
        plt.close(fig)
