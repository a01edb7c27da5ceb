"""``syntheticmri reparam``: one scan in, the same anatomy at another protocol out, on the input's grid and scale;
sidecars, kept maps, and a table of bad inputs (exit 2, one line, nothing written, inputs untouched)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.provenance import read_provenance
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume
from SyntheticMRILib.models.mapper import save_mapper
from SyntheticMRILib.models.reparam import DirectNet, ScanMaps, physics_network
from SyntheticMRILib.physics.protocols import Protocol
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.resources import sample_paths

from conftest import oblique_left_handed_direction

T2W = ["--sequence", "se", "--tr", "4500", "--te", "100"]
TO_T1W = ["--to-sequence", "se", "--to-tr", "500", "--to-te", "12"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A T2w of 8 slices of the bundled sample (gain 300) on an oblique left-handed grid, the maps, tiny models."""
    root = tmp_path_factory.mktemp("scan")
    maps = {}
    for name, path in sample_paths().items():
        v = read_volume(path)
        maps[name] = Volume(np.ascontiguousarray(v.array[76:84]), v.spacing, v.origin, oblique_left_handed_direction())
    tensors = [torch.from_numpy(maps[m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    image = 300.0 * synthesize(*tensors, Protocol("se", 4500.0, 100.0)).numpy()
    path = write_volume(maps["t1"].with_array(image.astype(np.float32)), root / "t2w.nrrd")
    torch.manual_seed(0)
    physics = save_mapper(physics_network(channels=(4, 8), embedding=8), root / "physics.pt")
    direct = save_mapper(DirectNet({"channels": [4, 8, 8], "mode": "param", "range": 10.0}), root / "direct.pt")
    return {"path": path, "maps": maps, "physics": physics, "direct": direct, "root": root}


def _argv(scan, out, source=T2W, target=TO_T1W, engine="physics", path=None):
    return (["reparam", "--input", str(path or scan["path"]), *source, *target, "--engine", engine,
             "--model", str(scan[engine]), "-o", str(out)])


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_both_engines_land_on_the_input_grid_and_say_the_target(scan, tmp_path):
    grid = read_volume(scan["path"])
    for engine in ("physics", "direct"):
        out = tmp_path / f"{engine}.nrrd"
        assert main(_argv(scan, out, engine=engine)) == 0
        image = read_volume(out)
        assert image.same_grid(grid) and np.isfinite(image.array).all() and image.array.min() >= 0
        assert read_provenance(out).protocol == Protocol("se", 500.0, 12.0)
    assert main(_argv(scan, tmp_path / "dir.nrrd", target=["--to-preset", "DIR"])) == 0
    assert read_provenance(tmp_path / "dir.nrrd").preset == "DIR"


def test_kept_maps_give_any_target_through_the_physics_layer_alone(scan, tmp_path):
    out = tmp_path / "t1w.nrrd"
    assert main(_argv(scan, out) + ["--keep-maps", str(tmp_path / "maps")]) == 0
    kept = ScanMaps.load(tmp_path / "maps", read_volume(scan["path"]))
    assert kept.protocol == Protocol("se", 4500.0, 100.0) and kept.gain > 0
    assert np.allclose(kept.render(Protocol("se", 500.0, 12.0)), read_volume(out).array, rtol=1e-5, atol=1e-4)
    assert np.allclose(kept.render(kept.protocol), read_volume(scan["path"]).array, rtol=1e-4, atol=1e-3)
    assert main(_argv(scan, tmp_path / "again.nrrd") + ["--keep-maps", str(tmp_path / "maps")]) == 2  # kept maps stay


def test_the_protocol_comes_from_a_sidecar_and_the_command_line_wins(scan, tmp_path):
    image = tmp_path / "flair.nrrd"
    image.write_bytes(scan["path"].read_bytes())
    (tmp_path / "flair.json").write_text(json.dumps({"RepetitionTime": 9.0, "EchoTime": 0.09, "InversionTime": 2.5}))
    assert main(_argv(scan, tmp_path / "sidecar.nrrd", source=[], path=image)) == 0
    explicit = ["--sequence", "ir", "--tr", "9000", "--te", "90", "--ti", "2500"]
    assert main(_argv(scan, tmp_path / "explicit.nrrd", source=explicit, path=image)) == 0
    assert np.array_equal(read_volume(tmp_path / "sidecar.nrrd").array, read_volume(tmp_path / "explicit.nrrd").array)
    assert main(_argv(scan, tmp_path / "te.nrrd", source=["--te", "120"], path=image)) == 0
    assert not np.array_equal(read_volume(tmp_path / "te.nrrd").array, read_volume(tmp_path / "explicit.nrrd").array)


def _sitk_file(array, path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array, np.float32), isVector=False), str(path))
    return path


def _bad(scan, tmp_path):
    """name -> (argv pieces, expected message)."""
    grid = read_volume(scan["path"])
    nan = grid.array.copy()
    nan[0, 0, 0] = np.nan
    gre = tmp_path / "gre.nrrd"
    gre.write_bytes(scan["path"].read_bytes())
    (tmp_path / "gre.json").write_text(json.dumps({"RepetitionTime": 0.02, "EchoTime": 0.004, "ScanningSequence": "GR"}))
    mprage = tmp_path / "mprage.nrrd"
    mprage.write_bytes(scan["path"].read_bytes())
    (tmp_path / "mprage.json").write_text(json.dumps({"RepetitionTime": 2.3, "EchoTime": 0.003, "InversionTime": 0.9,
                                                      "ScanningSequence": ["GR", "IR"]}))
    return {
        "missing TE": ({"source": ["--sequence", "se", "--tr", "4500"]}, "missing TE"),
        "no protocol": ({"source": []}, "the scan's sequence is not known"),
        "TE >= TR": ({"source": ["--sequence", "se", "--tr", "100", "--te", "100"]}, "TE must be below TR"),
        "seconds": ({"source": ["--sequence", "se", "--tr", "4.5", "--te", "0.1"]}, "if you meant seconds, that is --tr 4500 --te 100"),
        "SE with TI": ({"source": T2W + ["--ti", "300"]}, "takes no TI"),
        "IR without TI": ({"source": ["--sequence", "ir", "--tr", "9000", "--te", "90"]}, "missing TI"),
        "target in seconds": ({"target": ["--to-sequence", "se", "--to-tr", "0.5", "--to-te", "0.012"]},
                              "if you meant seconds, that is --to-tr 500 --to-te 12"),
        "target without TE": ({"target": ["--to-sequence", "se", "--to-tr", "500"]}, "needs --to-tr and --to-te"),
        "preset and TR": ({"target": ["--to-preset", "T1w", "--to-tr", "500"]}, "--to-preset fixes the target"),
        "direct makes no DIR": ({"target": ["--to-preset", "DIR"], "engine": "direct"}, "the physics engine makes any"),
        "2-D file": ({"path": _sitk_file(grid.array[0], tmp_path / "two_d.nrrd")}, "is 2-D"),
        "4-D file": ({"path": _sitk_file(np.stack([grid.array] * 2), tmp_path / "four_d.nrrd")}, "is 4-D"),
        "one slice": ({"path": write_volume(Volume(grid.array[:1].copy(), grid.spacing, grid.origin, grid.direction),
                                            tmp_path / "one.nrrd")}, "a single slice"),
        "NaN": ({"path": write_volume(grid.with_array(nan), tmp_path / "nan.nrrd")}, "NaN"),
        "T2 map as a T2w": ({"path": write_volume(scan["maps"]["t2"], tmp_path / "t2map.nrrd")}, "is this a T1 or T2 map"),
        "T2 map as a FLAIR": ({"path": write_volume(scan["maps"]["t2"], tmp_path / "t2map_ir.nrrd"),
                               "source": ["--sequence", "ir", "--tr", "9000", "--te", "90", "--ti", "2500"]}, "T1 or T2 map"),
        "label map": ({"path": write_volume(scan["maps"]["labels"], tmp_path / "labels.nrrd")}, "a label map, not a scan"),
        "gradient echo": ({"path": gre, "source": []}, "a gradient-echo scan"),
        "MPRAGE": ({"path": mprage, "source": []}, "an MPRAGE-like inversion-prepared one"),
        "missing file": ({"path": tmp_path / "nowhere.nrrd"}, "no such file"),
    }


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(scan, tmp_path, capsys):
    before = _digests(scan["root"])
    for name, (pieces, message) in _bad(scan, tmp_path).items():
        out = tmp_path / f"out-{name}.nrrd"
        assert main(_argv(scan, out, **pieces)) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("syntheticmri: error: ") and "\n" not in err, (name, err)
        assert message in err, (name, err)
        assert not out.exists(), name
    assert _digests(scan["root"]) == before


def test_an_existing_output_is_kept_unless_overwrite(scan, tmp_path, capsys):
    out = tmp_path / "out.nrrd"
    out.write_text("keep me")
    assert main(_argv(scan, out)) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(_argv(scan, out) + ["--overwrite"]) == 0 and read_volume(out).array.ndim == 3


def test_an_input_is_never_an_output_even_with_overwrite(scan, tmp_path, capsys):
    """-o naming the scan (by another spelling of its path), or --keep-maps where the scan is a map's name: refused;
    and so in synth."""
    before = _digests(scan["root"])
    same = scan["root"] / ".." / scan["root"].name / scan["path"].name
    kept = tmp_path / "kept"
    kept.mkdir()
    named_t1 = kept / "t1.nrrd"  # a scan named as a kept map, and --keep-maps its folder
    named_t1.write_bytes(scan["path"].read_bytes())
    for argv in (_argv(scan, same) + ["--overwrite"],
                 _argv(scan, tmp_path / "x.nrrd", path=named_t1) + ["--keep-maps", str(kept), "--overwrite"]):
        assert main(argv) == 2
        assert "is an input of this command" in capsys.readouterr().err
    assert _digests(scan["root"]) == before and named_t1.read_bytes() == scan["path"].read_bytes()
    assert not (tmp_path / "x.nrrd").exists()
    t1 = write_volume(scan["maps"]["t1"], tmp_path / "t1.nrrd")
    synth = ["synth", "--t1", str(t1), "--t2", str(write_volume(scan["maps"]["t2"], tmp_path / "t2.nrrd")),
             "--pd", str(write_volume(scan["maps"]["pd"], tmp_path / "pd.nrrd")), "--preset", "T1w", "--overwrite"]
    digest = hashlib.sha256(t1.read_bytes()).hexdigest()
    assert main(synth + ["-o", str(t1)]) == 2 and "is an input" in capsys.readouterr().err
    assert hashlib.sha256(t1.read_bytes()).hexdigest() == digest
    assert main(synth + ["-o", str(tmp_path / "t1w.nrrd")]) == 0


def test_a_scan_stored_as_8_bit_integers_is_not_taken_for_a_label_map(scan):
    """Few integer values, as a label map has, but not flat: a noisy T2w quantized to 0-255 passes; its labels do not."""
    from SyntheticMRILib.io.scan import check_not_labels

    image = read_volume(scan["path"]).array
    noisy = np.abs(image + np.random.default_rng(0).normal(0, 0.02 * image.max(), image.shape))
    check_not_labels(np.round(255 * noisy / noisy.max()))
    with pytest.raises(InputError, match="a label map"):
        check_not_labels(scan["maps"]["labels"].array.astype(np.float32))


def test_real_scans_at_random_protocols_are_not_taken_for_maps(scan):
    """The map check allows what a protocol makes: 40 SE and IR draws over the sample (noise-free, the hardest
    case: nothing blurs the brightest voxels), none refused; a T2 map is refused at every SE protocol and at most IR
    ones (not where white matter is near its null, TI ~400-700 ms: there every tissue is bright against it)."""
    from SyntheticMRILib.io.scan import check_not_a_map
    from SyntheticMRILib.physics.scans import draw_scan

    rng = np.random.default_rng(0)
    tensors = [torch.from_numpy(scan["maps"][m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    refused = {"se": [], "ir": []}
    for _ in range(40):
        protocol = draw_scan(rng)
        check_not_a_map(synthesize(*tensors, protocol).numpy(), protocol)
        try:
            check_not_a_map(scan["maps"]["t2"].array.astype(np.float32), protocol)
            refused[protocol.sequence].append(False)
        except InputError:
            refused[protocol.sequence].append(True)
    assert all(refused["se"]) and np.mean(refused["ir"]) > 0.7
