"""Cohort runs: killed at any point and rerun, they end byte for byte where an uninterrupted run ends; corrupt and
half-written outputs are made again; a changed request is refused; Dask workers make the same bytes as the plain
loop; Cancel ends the workers."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.cohort.recipe import build_recipe
from SyntheticMRILib.cohort.run import run_cohort, throughput
from SyntheticMRILib.cohort import subject as subject_module
from SyntheticMRILib.cohort.ledger import LEDGER, STATUS_FILE
from SyntheticMRILib.io.volumes import read_volume, write_volume
from SyntheticMRILib.jobs import CHILD_MODULE, child_environment, parse_progress, read_structure_volumes
from SyntheticMRILib.models.segmenter import label_volumes_ml
from SyntheticMRILib.resources import resource_path, sample_paths

from conftest import write_study

POSIX = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGKILL are POSIX")
PRESETS = ["T1w", "T2w", "T2-FLAIR"]


def outputs(folder: Path) -> dict:
    """Every file a run leaves for users (not its ledger), relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and LEDGER not in p.parts and p.name != STATUS_FILE}


def status(folder: Path) -> list:
    with open(folder / STATUS_FILE, newline="") as handle:
        return list(csv.DictReader(handle))


def batch_argv(study: Path, out: Path, *extra: str) -> list:
    argv = ["batch", "--input", str(study), "-o", str(out), "--device", "cpu", "--progress", "lines"]
    for name in PRESETS:
        argv += ["--preset", name]
    return argv + list(extra)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("cohort") / "study", subjects=6, shape=(48, 48, 40))


@pytest.fixture(scope="module")
def reference(study, tmp_path_factory) -> dict:
    """The outputs of an uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(batch_argv(study, out)) == 0
    return outputs(out)


# --------------------------------------------------------------------------- killed, truncated, half-written
@POSIX
@pytest.mark.parametrize("kill_after", [1, 6, 12])
def test_killed_with_sigkill_then_rerun_ends_byte_for_byte_as_an_uninterrupted_run(study, reference, tmp_path, kill_after):
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "SyntheticMRILib.apps.cli", *batch_argv(study, out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_environment())
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        if len([p for p in out.glob("sub-*/*.nrrd") if not p.name.startswith(".")]) >= kill_after:
            break
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run had finished before the kill: make the study bigger"
    assert outputs(out) != reference
    assert main(batch_argv(study, out)) == 0
    assert outputs(out) == reference
    assert {row["state"] for row in status(out)} == {"done"}
    assert not list(out.rglob(".partial-*"))


def test_killed_between_recording_an_output_and_renaming_it(study, reference, tmp_path, monkeypatch):
    """The instant a SIGKILL can only hit by chance: the entry is written, the file is not in place yet."""
    out = tmp_path / "out"
    saves = []
    save = subject_module.SubjectRecord.save

    def save_then_die(record):
        save(record)
        saves.append(record)
        if len(saves) == 5:  # the 5th output's entry is on disk, its file not renamed into place
            raise KeyboardInterrupt

    monkeypatch.setattr(subject_module.SubjectRecord, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(batch_argv(study, out))
    monkeypatch.undo()
    assert len(outputs(out)) == 4
    assert main(batch_argv(study, out)) == 0
    assert outputs(out) == reference and not list(out.rglob(".partial-*"))


def test_a_truncated_or_deleted_output_is_detected_and_made_again(study, reference, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(batch_argv(study, out)) == 0
    truncated, deleted = out / "sub-02" / "T2w.nrrd", out / "sub-04" / "T1w.nrrd"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    deleted.unlink()
    untouched = (out / "sub-00" / "T1w.nrrd").stat().st_mtime_ns
    capsys.readouterr()
    assert main(batch_argv(study, out)) == 0
    assert "2 remade" in capsys.readouterr().out
    assert outputs(out) == reference
    assert (out / "sub-00" / "T1w.nrrd").stat().st_mtime_ns == untouched


# --------------------------------------------------------------------------- the request changes
def test_a_changed_protocol_is_refused_before_any_work_and_overwrite_remakes_it(tmp_path, capsys):
    study = write_study(tmp_path / "study", subjects=2)
    out = tmp_path / "out"
    base = ["batch", "--input", str(study), "-o", str(out)]
    assert main(base + ["--protocol", "short=se,tr=450,te=10"]) == 0
    before = outputs(out)
    assert main(base + ["--protocol", "short=se,tr=500,te=10"]) == 2
    err = capsys.readouterr().err
    assert "short was made by another request" in err and "TR_ms 450 -> 500" in err
    assert outputs(out) == before
    assert main(base + ["--protocol", "short=se,tr=500,te=10", "--overwrite"]) == 0
    assert outputs(out) != before


def test_another_model_is_refused_and_an_added_step_makes_only_its_outputs(tmp_path, capsys):
    study = write_study(tmp_path / "study", subjects=2)
    out = tmp_path / "out"
    base = ["batch", "--input", str(study), "-o", str(out), "--learned"]
    assert main(base) == 0
    made = {name: (out / name).stat().st_mtime_ns for name in outputs(out)}
    assert main(base + ["--model", str(resource_path("Models", "baselines", "fixed.pt"))]) == 2
    assert "learned was made by another request (model_sha256" in capsys.readouterr().err
    assert main(base + ["--preset", "STIR"]) == 0
    assert "adds STIR" in capsys.readouterr().out
    assert {name: (out / name).stat().st_mtime_ns for name in made} == made
    assert sorted(outputs(out)) == sorted([*made, "sub-00/STIR.nrrd", "sub-01/STIR.nrrd"])
    assert main(["batch", "--input", str(study), "-o", str(out), "--preset", "STIR"]) == 0
    assert "leaves learned of earlier runs as they are" in capsys.readouterr().out


def test_a_damaged_request_record_is_a_one_line_error(tmp_path, capsys):
    study = write_study(tmp_path / "study", subjects=1)
    out = tmp_path / "out"
    assert main(["batch", "--input", str(study), "-o", str(out), "--preset", "T1w"]) == 0
    (out / LEDGER / "request.json").write_text('{"steps": [1]}')
    assert main(["batch", "--input", str(study), "-o", str(out), "--preset", "T1w"]) == 2
    assert "request.json: unreadable" in capsys.readouterr().err


def test_changed_maps_are_refused_for_that_subject_only(tmp_path, capsys):
    study = write_study(tmp_path / "study", subjects=2)
    out = tmp_path / "out"
    base = ["batch", "--input", str(study), "-o", str(out), "--preset", "T1w"]
    assert main(base) == 0
    pd = read_volume(study / "sub-01" / "pd.nrrd")
    (study / "sub-01" / "pd.nrrd").unlink()  # the files are hard links: replace, not rewrite
    write_volume(pd.with_array(pd.array * 0.9), study / "sub-01" / "pd.nrrd")
    assert main(base) == 2
    assert "sub-01" in capsys.readouterr().err and "other maps" in status(out)[1]["error"]
    assert main(base + ["--overwrite"]) == 0


def test_a_stopped_overwrite_run_is_finished_by_the_same_command_without_overwrite(tmp_path, monkeypatch):
    study = write_study(tmp_path / "study", subjects=3)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    base = ["batch", "--input", str(study), "--protocol"]
    assert main(base + ["short=se,tr=450,te=10", "-o", str(out)]) == 0
    save = subject_module.SubjectRecord.save

    def save_then_stop(record):
        save(record)
        raise KeyboardInterrupt  # after the first subject's new output is recorded

    monkeypatch.setattr(subject_module.SubjectRecord, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main(base + ["short=se,tr=500,te=10", "-o", str(out), "--overwrite"])
    monkeypatch.undo()
    assert main(base + ["short=se,tr=500,te=10", "-o", str(out)]) == 0  # accepted before: finished, not refused
    assert main(base + ["short=se,tr=500,te=10", "-o", str(fresh)]) == 0
    assert outputs(out) == outputs(fresh)


def test_one_run_at_a_time_per_output_folder(tmp_path, capsys):
    study = write_study(tmp_path / "study", subjects=1)
    out = tmp_path / "out"
    (out / LEDGER).mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        (out / LEDGER / "lock").write_text(f"{socket.gethostname()} {sleeper.pid}")
        assert main(["batch", "--input", str(study), "-o", str(out), "--preset", "T1w"]) == 2
        (out / LEDGER / "lock").write_text(f"another-machine {sleeper.pid}")  # its process cannot be checked from here
        assert main(["batch", "--input", str(study), "-o", str(out), "--preset", "T1w"]) == 2
        assert "delete that file" in capsys.readouterr().err
        (out / LEDGER / "lock").write_text(f"{socket.gethostname()} {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(["batch", "--input", str(study), "-o", str(out), "--preset", "T1w"]) == 0  # a dead holder's lock


# --------------------------------------------------------------------------- Dask, segmentation, the cohort table
@pytest.fixture(scope="module")
def brains(tmp_path_factory) -> Path:
    """Two whole brains (the sample, and the sample mirrored left-right) and one with impossible maps."""
    root = tmp_path_factory.mktemp("brains") / "study"
    maps = {name: read_volume(path) for name, path in sample_paths().items() if name != "labels"}
    for name, volume in maps.items():
        os.makedirs(root / "a", exist_ok=True)
        os.link(sample_paths()[name], root / "a" / f"{name}.nrrd")
        write_volume(volume.with_array(np.ascontiguousarray(volume.array[:, :, ::-1])), root / "b" / f"{name}.nrrd")
        bad = maps["t1"].array * 2.0 if name == "t2" else volume.array  # T2 = 2 T1: not a relaxation map
        os.makedirs(root / "c", exist_ok=True)
        write_volume(volume.with_array(bad), root / "c" / f"{name}.nrrd")
    return root


def test_dask_workers_make_the_same_bytes_as_the_plain_loop_and_a_bad_subject_stops_no_one(brains, tmp_path):
    recipe = build_recipe(["T2-FLAIR"], learned=True, segment=True)
    loop, dask = tmp_path / "loop", tmp_path / "dask"
    reports = [run_cohort(brains, recipe, loop, device="cpu"),
               run_cohort(brains, recipe, dask, device="cpu", workers=2)]
    for report in reports:
        assert list(report.failed) == ["c"] and "T2" in report.failed["c"]
        assert report.made == 2 * 6
    assert outputs(loop) == outputs(dask)
    assert sorted(outputs(loop)) == sorted(
        ["volumes.csv"] + [f"{s}/{f}" for s in "ab" for f in ["T2-FLAIR.nrrd", "learned_1_se.nrrd", "learned_2_se.nrrd",
                                                             "learned_3_ir.nrrd", "segmentation.nrrd", "volumes.csv"]])
    assert [(r["subject"], r["state"]) for r in status(dask) if r["output"] == "segmentation.nrrd"] == [
        ("a", "done"), ("b", "done"), ("c", "failed")]
    # the cohort table: one row per segmented subject, the structure volumes of its label map
    with open(dask / "volumes.csv", newline="") as handle:
        rows = {row.pop("subject"): row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["a", "b"]
    expected = label_volumes_ml(read_volume(dask / "b" / "segmentation.nrrd"))
    assert {k: float(v) for k, v in rows["b"].items()} == pytest.approx(expected, abs=0.0006)
    assert read_structure_volumes(dask / "b" / "volumes.csv") == pytest.approx(expected, abs=0.0006)
    mirrored = {k.replace("Left", "X").replace("Right", "Left").replace("X", "Right"): float(v) for k, v in rows["a"].items()}
    assert {k: float(v) for k, v in rows["b"].items()} == pytest.approx(mirrored, rel=0.1)  # the same brain, mirrored


@POSIX
def test_a_worker_killed_mid_run_loses_only_its_subject_and_a_rerun_completes_the_cohort(big_study, tmp_path):
    psutil = pytest.importorskip("psutil")
    reference, out = tmp_path / "reference", tmp_path / "out"
    argv = ["batch", "--input", str(big_study), "--preset", "T1w", "--preset", "T2w", "--device", "cpu",
            "--progress", "lines"]
    child = subprocess.Popen([sys.executable, "-m", "SyntheticMRILib.apps.cli", *argv, "-o", str(out), "--workers", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_environment())
    for line in child.stdout:
        progress = parse_progress(line.decode())
        if progress and progress[0] >= 2:
            break
    workers = [p for p in psutil.Process(child.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2 and progress[0] < progress[1], "the batch had finished: make the study bigger"
    workers[0].kill()
    child.stdout.read()
    assert child.wait(120) in (0, 2)  # Dask retried the lost subject on a worker, or reported it lost
    assert main([*argv, "-o", str(out)]) == 0  # a rerun completes whatever is left
    assert main([*argv, "-o", str(reference)]) == 0
    assert outputs(out) == outputs(reference)


def test_the_model_is_cached_per_process_and_device():
    from SyntheticMRILib.models.segmenter import default_model_path

    first = subject_module._model(str(default_model_path()), "cpu")
    assert subject_module._model(str(default_model_path()), "cpu") is first


@POSIX
def test_cancel_ends_the_dask_workers_through_the_stdin_lifeline(big_study, tmp_path):
    """What the module's Cancel does: close the child's stdin; the child closes its cluster, no process is left."""
    argv = [sys.executable, "-m", CHILD_MODULE, *batch_argv(big_study, tmp_path / "out", "--workers", "2")]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=child_environment(), start_new_session=True)
    try:
        for line in child.stdout:
            progress = parse_progress(line.decode())
            if progress and progress[0] >= 1:
                break
        assert progress is not None and progress[0] < progress[1], "the batch had finished: make the study bigger"
        child.stdin.close()
        assert child.wait(20) != 0
        deadline = time.monotonic() + 10
        while _group(child.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group(child.pid), "worker processes outlived the cancelled batch"
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.stdout.close()
        child.stderr.close()


def test_a_scheduler_address_runs_the_subjects_on_that_cluster(tmp_path):
    """The README's cluster commands, on this machine: `dask scheduler`, `dask worker`, then --scheduler ADDRESS."""
    study = write_study(tmp_path / "study", subjects=3, shape=(24, 24, 16))
    file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(file), "--nworkers", "1",
                               "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=child_environment())
    try:
        deadline = time.monotonic() + 30
        while not file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        import json

        address = json.loads(file.read_text())["address"]
        assert main(batch_argv(study, tmp_path / "cluster", "--scheduler", address)) == 0
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(10)
    assert main(batch_argv(study, tmp_path / "loop")) == 0
    assert outputs(tmp_path / "cluster") == outputs(tmp_path / "loop")


def test_an_unreachable_scheduler_is_a_one_line_error_with_nothing_written(tmp_path, capsys):
    study = write_study(tmp_path / "study", subjects=1)
    assert main(batch_argv(study, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9")) == 2
    err = capsys.readouterr().err
    assert "no Dask scheduler at tcp://127.0.0.1:9" in err
    assert not (tmp_path / "out").exists()


def _group(pgid: int) -> list:
    """The live (not zombie) processes of a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def test_throughput_reads_as_a_rate_and_the_time_left():
    assert throughput(0, 10, 5.0) == ""
    assert throughput(2, 10, 60.0) == "120.0 subjects/h, 4 min left"
    assert throughput(9, 10, 9.0) == "3600.0 subjects/h, 1 s left"
    assert throughput(1, 1000, 36.0) == "100.0 subjects/h, 10.0 h left"
