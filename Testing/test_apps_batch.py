"""``syntheticmri batch`` as a user runs it: every subject on its own grid, recipes, a bad subject reported and
retried, progress for a GUI, one-line errors with nothing written."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.io.maps import load_maps
from SyntheticMRILib.io.provenance import read_provenance
from SyntheticMRILib.physics.protocols import preset, protocol_from_args
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.io.volumes import read_header, read_volume, write_volume

from conftest import make_maps


def _study(root, seeds, suffix=".nii.gz"):
    for n, seed in enumerate(seeds):
        for name, volume in make_maps(shape=(6 + n, 7, 8), seed=seed).items():
            write_volume(volume, root / f"sub-{n:02d}" / f"{name}{suffix}")
    return root


def _status(out):
    with open(out / "status.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_batch_writes_every_contrast_on_each_subjects_grid(tmp_path):
    study = _study(tmp_path / "study", seeds=[1, 2])
    out = tmp_path / "out"
    assert main(["batch", "--input", str(study), "--preset", "T1w", "--preset", "DIR",
                 "--protocol", "short=se,tr=450,te=10", "-o", str(out)]) == 0
    short = protocol_from_args("se", 450, 10)
    for subject in ("sub-00", "sub-01"):
        maps = load_maps(*(study / subject / f"{m}.nii.gz" for m in ("t1", "t2", "pd")))
        for name, protocol in (("T1w", preset("T1w").protocol), ("DIR", preset("DIR").protocol), ("short", short)):
            image = read_volume(out / subject / f"{name}.nrrd")
            assert image.same_grid(maps.grid, tolerance=1e-6)
            expected = synthesize(*maps.tensors(), protocol).numpy()
            np.testing.assert_allclose(image.array, expected, rtol=1e-6, atol=1e-7)
        assert read_provenance(out / subject / "short.nrrd").protocol == short
    rows = _status(out)
    assert [(r["subject"], r["output"], r["state"]) for r in rows] == [
        (s, f"{n}.nrrd", "done") for s in ("sub-00", "sub-01") for n in ("T1w", "DIR", "short")]
    assert all(len(r["sha256"]) == 64 and r["version"] for r in rows)


def test_a_recipe_file_json_or_yaml_adds_to_the_command_line(tmp_path):
    study = _study(tmp_path / "study", seeds=[1])
    recipes = {"r.json": json.dumps({"presets": ["T2w"], "protocols": {"long": {"sequence": "flair", "tr": 9000, "te": 90}},
                                     "storage": "int16"}),
               "r.yaml": "presets: [T2w]\nprotocols:\n  long: {sequence: flair, tr: 9000, te: 90}\nstorage: int16\n"}
    for name, text in recipes.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / name.replace(".", "_")
        assert main(["batch", "--input", str(study), "--recipe", str(tmp_path / name), "--preset", "T1w", "-o", str(out)]) == 0
        assert sorted(p.name for p in (out / "sub-00").iterdir()) == ["T1w.nrrd", "T2w.nrrd", "long.nrrd"]
        assert "16-bit signed integer" in read_header(out / "sub-00" / "long.nrrd").pixel_type
        assert read_provenance(out / "sub-00" / "long.nrrd").table_field == 3.0
    assert (tmp_path / "r_json" / "sub-00" / "long.nrrd").read_bytes() == (tmp_path / "r_yaml" / "sub-00" / "long.nrrd").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--preset", "T1w", "--protocol", "T1w=se,tr=500,te=10"], "asked for twice"),
    (["--protocol", "x=se,tr=500"], "needs tr and te"),
    (["--protocol", "x=se,tr=50000,te=10"], "TR"),
    (["--protocol", "../up=se,tr=500,te=10"], "file name"),
    (["--protocol", "x"], "expected NAME=SEQUENCE"),
    (["--protocol", "x=se,tr=5oo,te=10"], "expected NAME=SEQUENCE"),
    (["--protocol", "x=spiral,tr=500,te=10"], "needs a sequence"),
    ([], "nothing to make"),
    (["--preset", "T1w", "--model", "m.pt"], "--model is for"),
    (["--preset", "T1w", "--workers", "0"], "at least 1"),
    (["--protocol", "learned=se,tr=450,te=10", "--learned"], "file name"),
    (["--preset", "T1w", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "its own workers"),
    (["--preset", "T1w", "--scheduler", "foo"], "no Dask scheduler at foo"),
])
def test_bad_requests_are_one_line_errors_with_nothing_written(tmp_path, capsys, args, message):
    study = _study(tmp_path / "study", seeds=[1])
    assert main(["batch", "--input", str(study), "-o", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_subject_is_recorded_the_others_finish_and_a_retry_completes_it(tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=[1, 2, 3])
    good_t2 = (study / "sub-01" / "t2.nii.gz").read_bytes()
    t1 = read_volume(study / "sub-01" / "t1.nii.gz")
    write_volume(t1.with_array(t1.array * 2.0), study / "sub-01" / "t2.nii.gz", overwrite=True)  # T2 > T1 everywhere
    out = tmp_path / "out"
    assert main(["batch", "--input", str(study), "--preset", "T2w", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 subject(s) failed: sub-01" in err
    states = {r["subject"]: (r["state"], r["error"]) for r in _status(out)}
    assert states["sub-00"] == ("done", "") and states["sub-02"] == ("done", "")
    assert states["sub-01"][0] == "failed" and "T2" in states["sub-01"][1]
    before = {s: (out / s / "T2w.nrrd").stat().st_mtime_ns for s in ("sub-00", "sub-02")}
    # a rerun as it was: the failed subject is not tried again, the others are kept, exit 2
    assert main(["batch", "--input", str(study), "--preset", "T2w", "-o", str(out)]) == 2
    assert "--retry-failed" in capsys.readouterr().out
    # the maps fixed, --retry-failed completes the cohort (exit 0) and the finished subjects are not rewritten
    (study / "sub-01" / "t2.nii.gz").write_bytes(good_t2)
    assert main(["batch", "--input", str(study), "--preset", "T2w", "-o", str(out), "--retry-failed"]) == 0
    assert {r["state"] for r in _status(out)} == {"done"}
    assert before == {s: (out / s / "T2w.nrrd").stat().st_mtime_ns for s in ("sub-00", "sub-02")}


def test_progress_lines_for_a_gui_count_subjects_with_rate_and_time_left(tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=[1, 2, 3])
    assert main(["batch", "--input", str(study), "--preset", "T1w", "-o", str(tmp_path / "out"), "--progress", "lines"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress ")]
    assert lines[0] == "progress 0/3 "
    assert [line.split()[1] for line in lines[1:]] == ["1/3", "2/3", "3/3"]
    assert [line.split()[2] for line in lines[1:]] == ["sub-00", "sub-01", "sub-02"]
    assert all("subjects/h" in line and "left)" in line for line in lines[1:])


def test_outputs_that_no_run_made_are_refused_unless_overwrite(tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=[1, 2])
    out = tmp_path / "out"
    (out / "sub-01").mkdir(parents=True)
    (out / "sub-01" / "T1w.nrrd").write_text("a user's file")
    assert main(["batch", "--input", str(study), "--preset", "T1w", "-o", str(out)]) == 2
    assert "no run made it" in capsys.readouterr().err
    assert _files(out) == ["sub-01/T1w.nrrd"]  # nothing written
    assert main(["batch", "--input", str(study), "--preset", "T1w", "-o", str(out), "--overwrite"]) == 0
    assert read_volume(out / "sub-01" / "T1w.nrrd").same_grid(read_volume(study / "sub-01" / "t1.nii.gz"), tolerance=1e-6)


@pytest.mark.parametrize("content, message", [
    ('{"presets": "T1w"}', "presets must be a list"),
    ('{"protocols": ["a"]}', "protocols must be a mapping"),
    ('{"protocols": {"a": {"sequence": "se", "tr": "abc", "te": 10}}}', "are numbers"),
    ('{"storage": ["x"]}', "storage must be"),
    ('{"presets": ["T1w"], "learned": "false"}', "learned must be true or false"),
    ('{"presets": ["T1w"], "model": 5}', "model must be a file path"),
    ('{"presets": ["T1w"], "colour": 1}', "unknown recipe keys"),
    ('presets: [T1w', "not valid"),
])
def test_a_malformed_recipe_is_one_line_error_with_nothing_written(tmp_path, capsys, content, message):
    study = _study(tmp_path / "study", seeds=[1])
    recipe = tmp_path / ("r.yaml" if content.startswith("presets:") else "r.json")
    recipe.write_text(content)
    assert main(["batch", "--input", str(study), "-o", str(tmp_path / "out"), "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_or_holds_a_users_tables_is_refused(tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=[1])
    (tmp_path / "file").write_text("x")
    assert main(["batch", "--input", str(study), "-o", str(tmp_path / "file"), "--preset", "T1w"]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "status.csv").write_text("a user's table")
    assert main(["batch", "--input", str(study), "-o", str(tmp_path / "out"), "--preset", "T1w"]) == 2
    assert "no run made it" in capsys.readouterr().err
    assert _files(tmp_path / "out") == ["status.csv"]
