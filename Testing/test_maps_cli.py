"""``syntheticmri maps``: routine series in, T1/T2/PD on the T1w's grid out; sidecars, grids, and a table of bad
inputs (exit 2, one line, nothing written, inputs untouched)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume
from SyntheticMRILib.models.mapper import MapNet, save_mapper
from SyntheticMRILib.physics.routine import series_protocols
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.resources import sample_paths

VALUES = {"t1w": {"tr": 500, "te": 10}, "t2w": {"tr": 4500, "te": 100}, "flair": {"tr": 9000, "te": 90, "ti": 2372}}
BRIGHT_FLUID_FLAIR = {"tr": 6000, "te": 140, "ti": 2800}  # in the training ranges, TI past the CSF null: fluid ~2x WM


def _cut(volume: Volume, k0: int = 76, k1: int = 84) -> Volume:
    return Volume(np.ascontiguousarray(volume.array[k0:k1]), volume.spacing, volume.origin, volume.direction)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """T1w, T2w and FLAIR of 8 slices of the bundled sample (gains 3, 500, 0.2), their maps, and a tiny model."""
    root = tmp_path_factory.mktemp("series")
    maps = {name: _cut(read_volume(path)) for name, path in sample_paths().items()}
    protocols = series_protocols(VALUES)
    tensors = [torch.from_numpy(maps[m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    paths = {}
    for (name, protocol), gain in zip(protocols.items(), (3.0, 500.0, 0.2)):
        image = gain * synthesize(*tensors, protocol).numpy()
        paths[name] = write_volume(maps["t1"].with_array(image.astype(np.float32)), root / f"{name}.nrrd")
    torch.manual_seed(0)
    net = MapNet({"channels": [4, 8], "context": 1, "embedding": 8})
    for film in net.film_down:  # FiLM starts as the identity: let the protocol reach the output
        torch.nn.init.normal_(film.to_affine.weight)
    model = save_mapper(net, root / "tiny.pt")
    return {"paths": paths, "maps": maps, "model": model, "root": root}


def _argv(series, out, values=VALUES, paths=None, model=True):
    paths = paths or series["paths"]
    argv = ["maps", "-o", str(out)]
    for name in ("t1w", "t2w", "flair"):
        argv += [f"--{name}", str(paths[name])]
        for key, value in values.get(name, {}).items():
            argv += [f"--{name}-{key}", str(value)]
    return argv + (["--model", str(series["model"])] if model else [])


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_maps_land_on_the_t1w_grid(series, tmp_path):
    out = tmp_path / "out"
    assert main(_argv(series, out)) == 0
    grid = read_volume(series["paths"]["t1w"])
    t1, t2, pd = (read_volume(out / f"{m}.nrrd") for m in ("t1", "t2", "pd"))
    for volume in (t1, t2, pd):
        assert volume.same_grid(grid)
    assert np.all(t2.array <= t1.array) and np.all((pd.array >= 0) & (pd.array <= 1))


def test_sidecars_give_the_parameters_and_the_command_line_wins(series, tmp_path):
    reference = tmp_path / "ref"
    main(_argv(series, reference))
    paths = {}
    for name, path in series["paths"].items():
        paths[name] = tmp_path / path.name
        paths[name].write_bytes(path.read_bytes())
        seconds = {"tr": "RepetitionTime", "te": "EchoTime", "ti": "InversionTime"}
        (tmp_path / f"{name}.json").write_text(json.dumps({seconds[k]: v / 1000 for k, v in VALUES[name].items()}))
    assert main(_argv(series, tmp_path / "sidecar", values={}, paths=paths)) == 0
    assert _digests(tmp_path / "sidecar") == _digests(reference)
    (tmp_path / "t2w.json").write_text(json.dumps({"RepetitionTime": 4.5, "EchoTime": 0.08}))  # TE overridden below
    assert main(_argv(series, tmp_path / "override", values={"t2w": {"te": 100}}, paths=paths)) == 0
    assert _digests(tmp_path / "override") == _digests(reference)
    assert main(_argv(series, tmp_path / "changed", values={}, paths=paths)) == 0
    assert _digests(tmp_path / "changed") != _digests(reference)  # the protocol reaches the network


def test_a_coarser_t2w_is_resampled_onto_the_t1w_grid(series, tmp_path, capsys):
    import SimpleITK as sitk

    image = read_volume(series["paths"]["t2w"]).to_image()
    coarse = sitk.Resample(image, [n // 2 for n in image.GetSize()[:2]] + [image.GetSize()[2]], sitk.Transform(),
                           sitk.sitkLinear, image.GetOrigin(), [s * 2 for s in image.GetSpacing()[:2]] + [image.GetSpacing()[2]],
                           image.GetDirection())
    path = tmp_path / "coarse_t2w.nrrd"
    write_volume(Volume.from_image(coarse), path)
    assert main(_argv(series, tmp_path / "out", paths={**series["paths"], "t2w": path})) == 0
    assert "t2w resampled onto the T1w grid (assumed co-registered)" in capsys.readouterr().out
    assert read_volume(tmp_path / "out" / "t1.nrrd").same_grid(read_volume(series["paths"]["t1w"]))


def test_a_protocol_outside_the_training_ranges_is_warned_about(series, tmp_path, capsys):
    assert main(_argv(series, tmp_path / "out", values={**VALUES, "t2w": {"tr": 8000, "te": 100}})) == 0
    assert "warning: t2w TR 8000 ms (2500-6000) is outside the training ranges" in capsys.readouterr().out


def _sitk_file(array, path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(array, np.float32), isVector=False), str(path))
    return path


def _bad(series, tmp_path):
    """name -> (paths, values, expected message)."""
    s = series["paths"]
    grid = read_volume(s["t1w"])
    flat = write_volume(Volume(grid.array[:1].copy(), grid.spacing, grid.origin, grid.direction), tmp_path / "one_slice.nrrd")
    nan = grid.array.copy()
    nan[0, 0, 0] = np.nan
    far = Volume(grid.array, grid.spacing, tuple(np.add(grid.origin, (0, 0, 500.0))), grid.direction)
    maps = series["maps"]
    return {
        "missing TI": (s, {**VALUES, "flair": {"tr": 9000, "te": 90}}, "flair: missing TI"),
        "TE >= TR": (s, {**VALUES, "t1w": {"tr": 500, "te": 500}}, "t1w: TE must be below TR"),
        "TI >= TR": (s, {**VALUES, "flair": {"tr": 2000, "te": 90, "ti": 2372}}, "flair: TI must be below TR"),
        "seconds": (s, {**VALUES, "t2w": {"tr": 4.5, "te": 0.1}}, "if you meant seconds, that is --t2w-tr 4500 --t2w-te 100"),
        "one slice is not a volume": ({**s, "t1w": flat}, VALUES, "a single slice"),
        "2-D file": ({**s, "t2w": _sitk_file(grid.array[0], tmp_path / "two_d.nrrd")}, VALUES, "is 2-D"),
        "4-D file": ({**s, "flair": _sitk_file(np.stack([grid.array] * 2), tmp_path / "four_d.nrrd")}, VALUES, "is 4-D"),
        "NaN": ({**s, "t2w": write_volume(grid.with_array(nan), tmp_path / "nan.nrrd")}, VALUES, "NaN"),
        "no overlap": ({**s, "flair": write_volume(far, tmp_path / "far.nrrd")}, VALUES, "does not overlap the T1w"),
        "T1 map as T1w": ({**s, "t1w": write_volume(maps["t1"], tmp_path / "t1map.nrrd")}, VALUES, "t1w: fluid is bright"),
        "T2 map as FLAIR": ({**s, "flair": write_volume(maps["t2"], tmp_path / "t2map.nrrd")}, VALUES, "flair: fluid is bright"),
        "T2 map as a bright-fluid FLAIR": ({**s, "flair": write_volume(maps["t2"], tmp_path / "t2map_b.nrrd")},
                                           {**VALUES, "flair": BRIGHT_FLUID_FLAIR}, "flair: fluid is bright"),
        "missing file": ({**s, "t2w": tmp_path / "nowhere.nrrd"}, VALUES, "no such file"),
        "T1w and FLAIR swapped": ({**s, "t1w": s["flair"], "flair": s["t1w"]}, VALUES, "t1w and flair look swapped"),
    }


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(series, tmp_path, capsys):
    before = _digests(series["root"])
    for name, (paths, values, message) in _bad(series, tmp_path).items():
        out = tmp_path / f"out-{name}"
        assert main(_argv(series, out, values=values, paths=paths)) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("syntheticmri: error: ") and "\n" not in err, (name, err)
        assert message is None or message in err, (name, err)
        assert not out.exists(), name
    assert _digests(series["root"]) == before


def test_existing_outputs_are_kept_unless_overwrite(series, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "t2.nrrd").write_text("keep me")
    assert main(_argv(series, out)) == 2
    assert "already exists" in capsys.readouterr().err and (out / "t2.nrrd").read_text() == "keep me"
    assert not (out / "t1.nrrd").exists()
    assert main(_argv(series, out) + ["--overwrite"]) == 0 and read_volume(out / "t2.nrrd").array.ndim == 3


@pytest.mark.parametrize("flair", [BRIGHT_FLUID_FLAIR, {"tr": 11000, "te": 80, "ti": 1800}, {"tr": 4800, "te": 168, "ti": 3360}])
def test_a_real_flair_at_any_protocol_is_not_taken_for_a_map(series, tmp_path, flair):
    """Fluid is bright on a FLAIR whose TI is past the CSF null: the check allows what the protocol makes."""
    maps = series["maps"]
    tensors = [torch.from_numpy(maps[m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    image = synthesize(*tensors, series_protocols({**VALUES, "flair": flair})["flair"]).numpy()
    path = write_volume(maps["t1"].with_array(image.astype(np.float32)), tmp_path / "flair.nrrd")
    assert main(_argv(series, tmp_path / "out", values={**VALUES, "flair": flair},
                      paths={**series["paths"], "flair": path})) == 0


def test_a_sidecar_value_the_command_line_replaces_is_not_read(series, tmp_path):
    paths = {**series["paths"], "t2w": tmp_path / "t2w.nrrd"}
    paths["t2w"].write_bytes(series["paths"]["t2w"].read_bytes())
    (tmp_path / "t2w.json").write_text(json.dumps({"RepetitionTime": 4.5, "EchoTime": [0.012, 0.1]}))  # multi-echo
    assert main(_argv(series, tmp_path / "out", paths=paths)) == 0
    assert main(_argv(series, tmp_path / "out2", paths=paths, values={**VALUES, "t2w": {"tr": 4500}})) == 2


def test_maps_are_zero_where_a_series_does_not_reach(series, tmp_path, capsys):
    t2w = read_volume(series["paths"]["t2w"])
    spacing = np.asarray(t2w.spacing)
    direction = np.asarray(t2w.direction).reshape(3, 3)
    origin = np.asarray(t2w.origin) + direction @ (spacing * (0, 0, 2))  # starts 2 slices higher
    part = Volume(np.ascontiguousarray(t2w.array[2:]), t2w.spacing, tuple(origin), t2w.direction)
    path = write_volume(part, tmp_path / "part_t2w.nrrd")
    assert main(_argv(series, tmp_path / "out", paths={**series["paths"], "t2w": path})) == 0
    assert "lies outside the T2w or FLAIR: the maps are 0 there" in capsys.readouterr().out
    t1 = read_volume(tmp_path / "out" / "t1.nrrd").array
    assert np.all(t1[:2] == 0) and np.any(t1[2:] > 0)


def test_the_same_head_on_a_flipped_grid_gives_the_same_maps(series, tmp_path):
    """The model-grid path (resampling there and back) keeps anatomy where it is."""
    flipped = {}
    for name, path in series["paths"].items():
        v = read_volume(path)
        direction = np.asarray(v.direction).reshape(3, 3) * (-1, 1, 1)  # i axis reversed
        origin = np.asarray(v.origin) + np.asarray(v.direction).reshape(3, 3) @ (np.asarray(v.spacing) * (v.array.shape[2] - 1, 0, 0))
        flipped[name] = write_volume(Volume(np.ascontiguousarray(v.array[:, :, ::-1]), v.spacing, tuple(origin),
                                            tuple(direction.ravel())), tmp_path / f"{name}.nrrd")
    assert main(_argv(series, tmp_path / "plain")) == 0
    assert main(_argv(series, tmp_path / "flipped", paths=flipped)) == 0
    for m in ("t1", "t2", "pd"):
        a = read_volume(tmp_path / "plain" / f"{m}.nrrd").array
        b = read_volume(tmp_path / "flipped" / f"{m}.nrrd")
        assert b.same_grid(read_volume(flipped["t1w"]))
        assert np.allclose(b.array[:, :, ::-1], a, rtol=1e-4, atol=1e-3 * a.max())
