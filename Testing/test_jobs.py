"""The batch out of process, as the module runs it: a child Python with files in and out, progress on stdout,
cancel through its stdin, then a kill of the whole tree. Plain pytest, no Slicer: the child is ``sys.executable``
(in Slicer it is PythonSlicer, a launcher in front of python-real: emulated below by a launcher script)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from SyntheticMRILib.jobs import (CANCELLED, CHILD_MODULE, LineBuffer, batch_command, child_environment, error_line,
                                      parse_progress, remove_partial_files, routine_maps_job, run_batch_process,
                                      slicer_python)
from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.maps import load_maps
from SyntheticMRILib.physics.protocols import preset
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.io.volumes import read_volume

from conftest import write_study

ROOT = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(os.name == "nt", reason="process groups and /proc: POSIX")
# A stand-in for PythonSlicer (CTK AppLauncher): runs its arguments as a child with the same stdin/stdout/stderr,
# waits, and exits with its status. Killing it does not kill that child.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def outputs(folder: Path) -> list:
    """The files a batch leaves for users: not its ledger (.syntheticmri/) nor status.csv."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and ".syntheticmri" not in p.parts and p.name != "status.csv") if folder.exists() else []


def assert_complete_volumes_only(folder: Path, shape) -> None:
    files = outputs(folder)
    assert not [f for f in files if Path(f).name.startswith(".partial-")], f"partial files left: {files}"
    for name in files:
        assert read_volume(folder / name).array.shape == shape, name


# --------------------------------------------------------------------------- the command and its output
def test_batch_command_runs_the_cli_batch_behind_the_stdin_lifeline(tmp_path):
    argv = batch_command("/opt/Slicer/bin/PythonSlicer", tmp_path / "study", ["T1w", "T2-FLAIR"], tmp_path / "out",
                         units="s", device="cpu", overwrite=True)
    assert argv == [
        "/opt/Slicer/bin/PythonSlicer", "-m", CHILD_MODULE, "batch", "--input", str(tmp_path / "study"),
        "--preset", "T1w", "--preset", "T2-FLAIR", "-o", str(tmp_path / "out"), "--units", "s", "--device", "cpu",
        "--workers", "1", "--overwrite", "--progress", "lines",
    ]
    steps = batch_command("python", "s", [], "o", learned=True, segment=True, retry_failed=True, workers=3)
    assert steps[steps.index("--workers"):] == ["--workers", "3", "--learned", "--segment", "--retry-failed",
                                                "--progress", "lines"]
    assert "--overwrite" not in batch_command("python", "s", ["T1w"], "o")
    with pytest.raises(InputError):
        batch_command("python", "s", [], "o")


def test_routine_maps_job_runs_the_cli_maps_on_the_job_folder(tmp_path):
    from SyntheticMRILib.apps.cli import _parser

    values = {"t1w": {"tr": 500, "te": 10.5, "ti": 300}, "t2w": {"tr": 4500, "te": 100},
              "flair": {"tr": 9000, "te": 90, "ti": 2372.25}}
    argv = routine_maps_job("/opt/Slicer/bin/PythonSlicer", tmp_path, values, device="cpu", model=tmp_path / "m.pt")
    assert argv == [
        "/opt/Slicer/bin/PythonSlicer", "-m", CHILD_MODULE, "maps",
        "--t1w", str(tmp_path / "t1w.nrrd"), "--t1w-tr", "500.0", "--t1w-te", "10.5",  # a T1w takes no TI
        "--t2w", str(tmp_path / "t2w.nrrd"), "--t2w-tr", "4500.0", "--t2w-te", "100.0",
        "--flair", str(tmp_path / "flair.nrrd"), "--flair-tr", "9000.0", "--flair-te", "90.0", "--flair-ti", "2372.25",
        "-o", str(tmp_path / "maps"), "--device", "cpu", "--progress", "lines", "--model", str(tmp_path / "m.pt"),
    ]
    args = _parser().parse_args(argv[3:])  # what the child's cli reads from it
    assert (args.command, args.t1w_te, args.flair_ti, args.output, args.progress) == (
        "maps", 10.5, 2372.25, tmp_path / "maps", "lines")
    missing = routine_maps_job("python", "f", {**values, "t2w": {"tr": 4500}})  # left to the child, which names it
    assert "--t2w-te" not in missing and "--model" not in missing and missing[missing.index("--device") + 1] == "auto"


def test_parse_progress_reads_the_cli_lines_and_nothing_else():
    assert parse_progress("progress 0/3 sub-00") == (0, 3, "sub-00")
    assert parse_progress("progress 1/3 subject one\r\n") == (1, 3, "subject one")
    assert parse_progress("progress 3/3 ") == parse_progress("progress 3/3") == (3, 3, "")
    for other in ("sub-01: skipped: no pd map", "progress", "progress a/b x", " progress 1/2 x", ""):
        assert parse_progress(other) is None, other


def test_line_buffer_joins_chunks_split_anywhere():
    class QByteArray:  # what PythonQt's readAllStandardOutput() returns
        def __init__(self, data):
            self._data = data

        def data(self):
            return self._data

    stream = "progress 0/2 sujet-é\r\nprogress 1/2 x\nlast".encode()
    buffer, lines = LineBuffer(), []
    cut = stream.index("é".encode()) + 1  # inside the two bytes of é
    for chunk in (stream[:5], stream[5:cut], QByteArray(stream[cut:])):
        lines += buffer.feed(chunk)
    assert lines == ["progress 0/2 sujet-é", "progress 1/2 x"]
    assert buffer.flush() == ["last"] and buffer.flush() == []
    assert buffer.feed("a\nb") == ["a"] and buffer.flush() == ["b"]


def test_error_line_is_the_last_line_of_stderr():
    assert error_line(b"warning: x\nsyntheticmri: error: bad\n\n") == "syntheticmri: error: bad"
    assert error_line("") == ""


def test_slicer_python_prefers_the_one_beside_the_executable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    python = tmp_path / "bin" / "python-real"
    python.parent.mkdir()
    python.touch()
    assert slicer_python(str(python)) == str(python)  # no PythonSlicer anywhere: this interpreter
    launcher = python.with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    launcher.touch()
    assert slicer_python(str(python)) == str(launcher)


def test_child_environment_puts_this_library_first_on_pythonpath():
    env = child_environment({"PYTHONPATH": os.pathsep.join(["/a", str(ROOT)]), "HOME": "/h"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/a"]
    assert env["HOME"] == "/h" and env["PYTHONUNBUFFERED"] == "1"
    assert child_environment({})["PYTHONPATH"] == str(ROOT)


def test_remove_partial_files_removes_only_write_volume_temporaries(tmp_path):
    (tmp_path / "sub-00").mkdir()
    partial, kept = tmp_path / "sub-00" / ".partial-123-T1w.nrrd", tmp_path / "sub-00" / "T1w.nrrd"
    partial.touch()
    kept.touch()
    assert remove_partial_files(tmp_path) == [partial]
    assert kept.exists() and not partial.exists()
    assert remove_partial_files(tmp_path / "missing") == []


# --------------------------------------------------------------------------- the child, for real
def test_batch_in_a_child_writes_every_output_and_reports_progress_in_order(tmp_path):
    study = write_study(tmp_path / "study", subjects=3)
    out = tmp_path / "out"
    lines = []
    code, stderr = run_batch_process(batch_command(sys.executable, study, ["T1w", "T2-FLAIR"], out, device="cpu"),
                                     on_progress=lines.append)
    assert code == 0, stderr
    progress = [parsed for parsed in map(parse_progress, lines) if parsed is not None]
    assert [(done, total) for done, total, _ in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [what.split()[0] for _, _, what in progress[1:]] == ["sub-00", "sub-01", "sub-02"]
    assert outputs(out) == [f"sub-{n:02d}/{name}.nrrd" for n in range(3) for name in ("T1w", "T2-FLAIR")]
    maps = load_maps(*(study / "sub-02" / f"{m}.nrrd" for m in ("t1", "t2", "pd")))
    image = read_volume(out / "sub-02" / "T2-FLAIR.nrrd")
    assert image.same_grid(maps.grid, tolerance=1e-6)
    np.testing.assert_allclose(image.array, synthesize(*maps.tensors(), preset("T2-FLAIR").protocol).numpy(),
                               rtol=1e-6, atol=1e-7)


def test_a_failing_subject_surfaces_its_stderr_line_and_the_others_are_written(tmp_path):
    study = write_study(tmp_path / "study", subjects=3, missing=[("sub-01", "pd")])
    out = tmp_path / "out"
    lines = []
    code, stderr = run_batch_process(batch_command(sys.executable, study, ["T2w"], out, device="cpu"),
                                     on_progress=lines.append)
    assert code == 2
    assert error_line(stderr).startswith("syntheticmri: error: 1 subject(s) failed: sub-01")
    assert any(line.startswith("sub-01: failed:") and "pd" in line for line in lines)
    assert outputs(out) == ["sub-00/T2w.nrrd", "sub-02/T2w.nrrd"]


def test_an_argument_error_surfaces_too(tmp_path):
    code, stderr = run_batch_process(batch_command(sys.executable, tmp_path, ["T1w"], tmp_path / "o", units="min"))
    assert code == 2 and "invalid choice: 'min'" in error_line(stderr)


def test_cancel_stops_the_child_quickly_and_leaves_only_complete_volumes(big_study, tmp_path):
    out, lines, asked = tmp_path / "out", [], []

    def should_cancel():
        if lines and not asked:
            asked.append(time.monotonic())
        return bool(asked)

    code, stderr = run_batch_process(batch_command(sys.executable, big_study, ["T1w", "T2w"], out, device="cpu"),
                                     on_progress=lines.append, should_cancel=should_cancel, grace=3.0)
    assert time.monotonic() - asked[0] < 5.0
    assert code != 0 and code == CANCELLED, stderr  # it stopped itself (stdin closed) within the grace: no kill
    assert error_line(stderr) == "syntheticmri: cancelled"
    assert len({Path(f).parent for f in outputs(out)}) < 40, "the batch had finished: make the study bigger"
    assert_complete_volumes_only(out, (64, 64, 64))


def test_a_launcher_killed_alone_leaves_its_child_running_until_its_stdin_closes(big_study, tmp_path):
    """What happens in Slicer: QProcess.kill() ends PythonSlicer, not python-real; closing the pipe ends both."""
    out = tmp_path / "out"
    argv = batch_command(sys.executable, big_study, ["T1w", "T2w"], out, device="cpu")
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_environment())
    try:
        assert parse_progress(launcher.stdout.readline().decode()) == (0, 40, "")
        launcher.kill()
        launcher.wait()
        assert parse_progress(launcher.stdout.readline().decode())[0] >= 1, "the child died with the launcher"
        closed = time.monotonic()
        launcher.stdin.close()  # QProcess.closeWriteChannel(), as Cancel does
        ended = threading.Event()
        threading.Thread(target=lambda: (launcher.stdout.read(), ended.set()), daemon=True).start()
        assert ended.wait(5.0), "the child still holds stdout 5 s after its stdin closed"
        assert time.monotonic() - closed < 5.0
        assert error_line(launcher.stderr.read()) == "syntheticmri: cancelled"
    finally:
        for stream in (launcher.stdin, launcher.stdout, launcher.stderr):
            stream.close()
    done = len({Path(f).parent for f in outputs(out)})
    time.sleep(0.5)
    assert len({Path(f).parent for f in outputs(out)}) == done < 40, "something still writes"
    assert_complete_volumes_only(out, (64, 64, 64))


def test_a_child_stuck_in_native_code_exits_hard_after_the_grace(tmp_path):
    """The lifeline's second step: KeyboardInterrupt cannot land (here: swallowed), so it exits anyway."""
    code = (  # a SIGINT handler that does nothing: the interrupt never lands, at any point of the loop
        "import signal, time; from SyntheticMRILib.apps.child import _stop_when_stdin_closes\n"
        "signal.signal(signal.SIGINT, lambda *args: None)\n"
        "_stop_when_stdin_closes(0.5)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    time.sleep(10)\n"
    )
    started = []
    result = run_batch_process([sys.executable, "-c", code], on_progress=started.append,
                               should_cancel=lambda: bool(started), grace=10.0)  # generous: a loaded CI machine
    assert result[0] == CANCELLED  # its own exit, within the runner's grace: no kill was needed


@POSIX
def test_cancel_kills_the_whole_process_group(tmp_path):
    """A child that ignores its stdin and has a child of its own: both are gone after the grace."""
    code = (
        "import subprocess, sys, time\n"
        "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], stdin=subprocess.DEVNULL)\n"
        "print(grandchild.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    pids = []
    start = time.monotonic()
    returncode, _ = run_batch_process([sys.executable, "-c", code], on_progress=pids.append,
                                      should_cancel=lambda: bool(pids), grace=0.2)
    assert time.monotonic() - start < 5.0 and returncode != 0
    grandchild = int(pids[0])
    deadline = time.monotonic() + 5.0
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for a reaper that a container may not have, is dead)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
