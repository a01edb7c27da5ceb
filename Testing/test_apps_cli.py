"""The command line: correct output on awkward grids, and a table of bad inputs.

Every bad input must give exit status 2, one line on stderr naming the problem,
no output file, and untouched inputs.
"""
from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.physics.protocols import PRESETS
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume


def _closed_form(name, t1, t2, pd):
    """Independent numpy forms of a few sequences (not the library's code)."""
    p = PRESETS[name].protocol
    with np.errstate(divide="ignore", invalid="ignore"):
        e = lambda t, T: np.where(T > 0, np.exp(-t / np.where(T > 0, T, 1)), 0.0)
        if p.sequence == "se":
            s = pd * (1 - 2 * e(p.tr - p.te / 2, t1) + e(p.tr, t1)) * e(p.te, t2)
        elif p.sequence == "ir":
            s = np.abs(pd * (1 - 2 * e(p.ti, t1) + e(p.tr, t1)) * e(p.te, t2))
        elif p.sequence == "dir":
            s = np.abs(pd * (1 - 2 * e(p.ti2, t1) + 2 * e(p.ti, t1) - e(p.tr, t1)) * e(p.te, t2))
        elif p.sequence == "gre":
            a, e1 = np.deg2rad(p.flip), e(p.tr, t1)
            s = pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * e(p.te, t2)
    return s


@pytest.mark.parametrize("name", ["T1w", "T2w", "T2-FLAIR", "STIR", "DIR", "T1w-GRE"])
def test_synth_on_oblique_left_handed_grid(map_files, tmp_path, name):
    paths, volumes = map_files
    out = tmp_path / "out.nrrd"
    assert main(["synth", "--t1", str(paths["t1"]), "--t2", str(paths["t2"]), "--pd", str(paths["pd"]), "--preset", name, "-o", str(out)]) == 0
    result = read_volume(out)
    assert result.array.shape == volumes["t1"].array.shape
    for field in ("spacing", "origin", "direction"):  # NRRD keeps doubles: equal to the last bit or two
        np.testing.assert_allclose(getattr(result, field), getattr(volumes["t1"], field), rtol=0, atol=1e-12)
    expected = _closed_form(name, *(volumes[k].array.astype(np.float64) for k in ("t1", "t2", "pd")))
    assert np.abs(result.array - expected).max() < 1e-2 * expected.max()
    background = volumes["t1"].array == 0
    assert np.all(result.array[background] == 0)


def test_units_seconds_and_pd_percent_give_the_same_image(map_files, tmp_path, capsys):
    paths, volumes = map_files
    reference = tmp_path / "ref.nrrd"
    main(["synth", "--t1", str(paths["t1"]), "--t2", str(paths["t2"]), "--pd", str(paths["pd"]), "--preset", "T1w", "-o", str(reference)])
    scaled = {
        "t1": write_volume(volumes["t1"].with_array(volumes["t1"].array / 1000), tmp_path / "t1s.nrrd"),
        "t2": write_volume(volumes["t2"].with_array(volumes["t2"].array / 1000), tmp_path / "t2s.nrrd"),
        "pd": write_volume(volumes["pd"].with_array(volumes["pd"].array * 100), tmp_path / "pdp.nrrd"),
    }
    out = tmp_path / "out.nrrd"
    argv = ["synth", "--t1", str(scaled["t1"]), "--t2", str(scaled["t2"]), "--pd", str(scaled["pd"]), "--preset", "T1w", "-o", str(out)]
    assert main(argv + ["--units", "s"]) == 0
    printed = capsys.readouterr().out
    assert "converted from s to ms" in printed and "percent" in printed
    np.testing.assert_allclose(read_volume(out).array, read_volume(reference).array, rtol=1e-5, atol=1e-7)


def test_sequence_flair_defaults_ti_to_csf_null(map_files, tmp_path):
    from SyntheticMRILib.physics.tissues import relaxation

    paths, _ = map_files
    argv = ["synth", "--t1", str(paths["t1"]), "--t2", str(paths["t2"]), "--pd", str(paths["pd"]), "--tr", "9000", "--te", "90"]
    t1_csf = relaxation("csf").t1
    null = t1_csf * np.log(2 / (1 + np.exp(-9000 / t1_csf)))  # Mz = 0 at TI
    assert main(argv + ["--sequence", "flair", "-o", str(tmp_path / "a.nrrd")]) == 0
    assert main(argv + ["--sequence", "ir", "--ti", repr(float(null)), "-o", str(tmp_path / "b.nrrd")]) == 0
    np.testing.assert_allclose(read_volume(tmp_path / "a.nrrd").array, read_volume(tmp_path / "b.nrrd").array, rtol=1e-5, atol=1e-7)


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in PRESETS)


# ---------------------------------------------------------------- bad input table
def _write(tmp, name, volume):
    return str(write_volume(volume, tmp / name))


def _variant(name, change):
    """A case that rewrites map ``name`` through ``change(volume) -> Volume``."""

    def setup(args, volumes, tmp):
        args[f"--{name}"] = _write(tmp, f"bad_{name}.nrrd", change(volumes[name]))

    return setup


def _values(name, fn):
    def change(volume):
        array = volume.array.copy()
        fn(array)
        return volume.with_array(array)

    return _variant(name, change)


def _set(**flags):
    def setup(args, volumes, tmp):
        for key, value in flags.items():
            flag = "--" + key.replace("_", "-")
            if value is None:
                args.pop(flag, None)
            else:
                args[flag] = value

    return setup


def _sequence(**flags):
    return _set(preset=None, **flags)


def _garbage(args, volumes, tmp):
    (tmp / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not an image\n")
    args["--t2"] = str(tmp / "garbage.nrrd")


def _text_file(args, volumes, tmp):
    (tmp / "t1.txt").write_text("1 2 3")
    args["--t1"] = str(tmp / "t1.txt")


def _image_of_dimension(dimension):
    def setup(args, volumes, tmp):
        size = [6] * dimension
        sitk.WriteImage(sitk.Image(size, sitk.sitkFloat32), str(tmp / f"d{dimension}.nrrd"))
        args["--pd"] = str(tmp / f"d{dimension}.nrrd")

    return setup


def _existing_output(args, volumes, tmp):
    (tmp / "out.nrrd").write_bytes(b"precious")


def _grid(**change):
    return _variant("t2", lambda v: Volume(v.array, **{**dict(spacing=v.spacing, origin=v.origin, direction=v.direction), **change}))


def _seconds(args, volumes, tmp):
    """T1 and T2 both in seconds (a unit --units s converts)."""
    for name in ("t1", "t2"):
        args[f"--{name}"] = _write(tmp, f"{name}_s.nrrd", volumes[name].with_array(volumes[name].array / 1000))


def _swapped(args, volumes, tmp):
    args["--t1"], args["--t2"] = args["--t2"], args["--t1"]


def _weighted_as_t1(**flags):
    """A T1-weighted image (0-1) given as the T1 map: once refused with "pass --units s", then accepted with it."""

    def setup(args, volumes, tmp):
        image = _closed_form("T1w", *(volumes[k].array.astype(np.float64) for k in ("t1", "t2", "pd")))
        args["--t1"] = _write(tmp, "t1w.nrrd", volumes["t1"].with_array((image / image.max()).astype(np.float32)))
        _set(**flags)(args, volumes, tmp)

    return setup


BAD_INPUTS = [
    ("missing-t1", _set(t1="nowhere/t1.nrrd"), "no such file"),
    ("missing-pd", _set(pd="nowhere/pd.nii.gz"), "no such file"),
    ("unreadable", _garbage, "cannot be read"),
    ("not-an-image-type", _text_file, "unsupported file type"),
    ("shape-mismatch", _variant("t2", lambda v: Volume(v.array[:-1].copy(), v.spacing, v.origin, v.direction)), "different grid"),
    ("spacing-mismatch", _grid(spacing=(1.0, 1.0, 1.0)), "different grid"),
    ("origin-mismatch", _grid(origin=(0.0, 0.0, 0.0)), "different grid"),
    ("direction-mismatch", _grid(direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)), "different grid"),
    ("nan-t1", _values("t1", lambda a: a.__setitem__((4, 4, 4), np.nan)), "NaN or infinite"),
    ("inf-t2", _values("t2", lambda a: a.__setitem__((4, 4, 4), np.inf)), "NaN or infinite"),
    ("negative-t1", _values("t1", lambda a: a.__setitem__((4, 4, 4), -5)), "negative"),
    ("negative-t2", _values("t2", lambda a: a.__setitem__((4, 4, 4), -5)), "negative"),
    ("negative-pd", _values("pd", lambda a: a.__setitem__((4, 4, 4), -0.1)), "negative"),
    ("t1-t2-in-seconds", _seconds, "looks like seconds; pass --units s"),
    # T1 in s, T2 in ms: --units s would make T2 a thousand times too long, so it is not suggested
    ("t1-only-in-seconds", _values("t1", lambda a: a.__itruediv__(1000)), "give both maps in one unit"),
    ("weighted-as-t1", _weighted_as_t1(), "does not look like a T1 map in ms or s"),
    ("weighted-as-t1-units-s", _weighted_as_t1(units="s"), "weighted image"),
    ("t1-t2-swapped", _swapped, "look swapped"),
    ("t2-above-t1", _values("t2", lambda a: a.__imul__(20)), "T2 exceeds T1"),
    ("units-s-on-ms-maps", _set(units="s"), "looks like ms already"),
    ("pd-arbitrary-units", _values("pd", lambda a: a.__imul__(4000)), "fraction of water"),
    ("empty-t1", _values("t1", lambda a: a.fill(0)), "zero everywhere"),
    ("te-not-below-tr", _sequence(sequence="se", tr="500", te="600"), "TE must"),
    ("tr-not-positive", _sequence(sequence="se", tr="-5", te="1"), "TR must"),
    ("ti-not-below-tr", _sequence(sequence="ir", tr="3000", te="10", ti="3500"), "TI must"),
    ("ti2-not-below-ti", _sequence(sequence="dir", tr="7500", te="20", ti="500", ti2="900"), "TI2 must"),
    ("flip-zero", _sequence(sequence="gre", tr="20", te="4", flip="0"), "flip angle"),
    ("tr-te-in-seconds", _sequence(sequence="se", tr="0.5", te="0.01"), "if you meant seconds, that is --tr 500 --te 10"),
    ("te-in-seconds", _sequence(sequence="se", tr="500", te="0.01"), "TE 0.01 ms is below"),
    ("ti-in-seconds", _sequence(sequence="ir", tr="9000", te="90", ti="2.4"), "if you meant seconds, that is --ti 2400"),
    ("flair-in-seconds", _sequence(sequence="flair", tr="9", te="0.09"), "if you meant seconds, that is --tr 9000 --te 90"),
    ("gre-te-below-minimum", _sequence(sequence="gre", tr="20", te="0.5", flip="25"), "TE 0.5 ms is below"),
    ("flip-over-180", _sequence(sequence="gre", tr="20", te="4", flip="200"), "flip angle"),
    ("ir-without-ti", _sequence(sequence="psir", tr="3000", te="10"), "needs --ti"),
    ("se-with-flip", _sequence(sequence="se", tr="500", te="10", flip="30"), "takes no --flip"),
    ("sequence-without-te", _sequence(sequence="se", tr="500"), "needs --tr and --te"),
    ("unknown-preset", _set(preset="T3w"), "unknown preset"),
    ("preset-with-tr", _set(tr="600"), "--preset fixes"),
    ("input-2d", _image_of_dimension(2), "is 2-D"),
    ("input-4d", _image_of_dimension(4), "is 4-D"),
    ("output-exists", _existing_output, "already exists"),
    ("output-type", _set(output="out.png"), "unsupported file type"),
    ("unknown-units", _set(units="us"), "invalid choice"),
    ("unknown-sequence", _sequence(sequence="bssfp", tr="5", te="2"), "invalid choice"),
]
if not torch.cuda.is_available():
    BAD_INPUTS.append(("cuda-without-gpu", _set(device="cuda"), "no CUDA GPU"))


def _digest(paths):
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths}


@pytest.mark.parametrize("case, setup, message", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input(map_files, tmp_path, capsys, monkeypatch, case, setup, message):
    monkeypatch.chdir(tmp_path)
    paths, volumes = map_files
    args = {"--t1": str(paths["t1"]), "--t2": str(paths["t2"]), "--pd": str(paths["pd"]), "--preset": "T2-FLAIR", "--output": "out.nrrd"}
    setup(args, volumes, tmp_path)
    inputs = [args[k] for k in ("--t1", "--t2", "--pd") if k in args and (tmp_path / args[k]).is_file()]
    before = _digest(inputs)
    output_before = (tmp_path / args["--output"]).read_bytes() if (tmp_path / args["--output"]).exists() else None
    argv = ["synth"] + [token for key, value in args.items() for token in (key, value)]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors (invalid choice)
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    if "invalid choice" not in message:
        assert err.startswith("syntheticmri: error:") and err.count("\n") == 1
    output = tmp_path / args["--output"]
    assert (output.read_bytes() if output.exists() else None) == output_before  # nothing written or replaced
    assert _digest(inputs) == before  # inputs untouched


def test_bad_input_table_is_large_enough():
    assert len(BAD_INPUTS) >= 25


def test_a_weighted_image_as_t1_is_refused_and_the_advice_never_leads_to_an_image(map_files, tmp_path, capsys):
    """Defect: a weighted image as the T1 map was refused with "looks like seconds; pass --units s", and
    following that advice wrote a meaningless image. Now both are refused, and no advice points to --units s."""
    paths, volumes = map_files
    image = _closed_form("T1w", *(volumes[k].array.astype(np.float64) for k in ("t1", "t2", "pd")))
    weighted = _write(tmp_path, "t1w.nrrd", volumes["t1"].with_array((image / image.max()).astype(np.float32)))
    argv = ["synth", "--t1", weighted, "--t2", str(paths["t2"]), "--pd", str(paths["pd"]), "--preset", "T1w",
            "-o", str(tmp_path / "out.nrrd")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--units s" not in err and "does not look like a T1 map" in err and err.count("\n") == 1
    assert main(argv + ["--units", "s"]) == 2
    err = capsys.readouterr().err
    assert "weighted image" in err and err.count("\n") == 1
    assert not (tmp_path / "out.nrrd").exists()


def test_swapped_maps_and_times_in_seconds_are_refused_with_what_was_meant(map_files, tmp_path, capsys):
    paths, _ = map_files
    out = tmp_path / "out.nrrd"
    maps = ["--t1", str(paths["t1"]), "--t2", str(paths["t2"]), "--pd", str(paths["pd"])]
    assert main(["synth", "--t1", str(paths["t2"]), "--t2", str(paths["t1"]), "--pd", str(paths["pd"]),
                 "--preset", "T1w", "-o", str(out)]) == 2
    assert "look swapped" in capsys.readouterr().err
    assert main(["synth", *maps, "--sequence", "se", "--tr", "0.5", "--te", "0.01", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "TR 0.5 ms and TE 0.01 ms are below" in err and "that is --tr 500 --te 10" in err
    assert not out.exists()
    assert main(["synth", *maps, "--sequence", "se", "--tr", "500", "--te", "10", "-o", str(out)]) == 0  # as meant


# --------------------------------------------------------------------------- one CLI, one set of rules
def test_sequence_names_take_any_case_as_preset_names_do(map_files, tmp_path):
    paths, _ = map_files
    args = ["--t1", str(paths["t1"]), "--t2", str(paths["t2"]), "--pd", str(paths["pd"])]
    assert main(["synth", *args, "--sequence", "IR", "--tr", "5000", "--te", "10", "--ti", "600", "-o", str(tmp_path / "a.nrrd")]) == 0
    assert main(["synth", *args, "--sequence", "ir", "--tr", "5000", "--te", "10", "--ti", "600", "-o", str(tmp_path / "b.nrrd")]) == 0
    assert main(["synth", *args, "--preset", "t2-flair", "--units", "MS", "-o", str(tmp_path / "c.nrrd")]) == 0
    np.testing.assert_array_equal(read_volume(tmp_path / "a.nrrd").array, read_volume(tmp_path / "b.nrrd").array)


@pytest.mark.parametrize("command", ["synth", "batch", "demo", "segment", "contrast", "phantom", "train-seg"])
def test_every_option_has_help(command):
    from SyntheticMRILib.apps.cli import _parser

    parser = _parser()
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices[command]
    silent = [action.option_strings for action in sub._actions if action.option_strings and not action.help]
    assert not silent, f"{command}: no help for {silent}"


def test_an_error_ends_the_progress_bar_first(monkeypatch, capsys):
    """A bar drawn with carriage returns is closed before the error, which then starts a line of its own."""
    from tqdm import tqdm

    from SyntheticMRILib.apps import cli

    def failing(args):
        bar = tqdm(total=3, desc="segment", leave=False)
        bar.update(1)
        raise InputError("out of memory on cuda; try --device cpu")

    monkeypatch.setitem(cli.COMMANDS, "presets", failing)
    assert main(["presets"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("syntheticmri: error: out of memory on cuda; try --device cpu\n")
    before = err[: -len("syntheticmri: error: out of memory on cuda; try --device cpu\n")]
    assert before == "" or before.endswith(("\n", "\r")), repr(before[-40:])
    assert not list(tqdm._instances)
