"""Batch synthesis over a folder of subjects, for the command line, the Slicer Python console and the module.

A study folder holds one sub-folder per subject with its maps named ``t1``,
``t2`` and ``pd`` (any supported format, e.g. ``t1.nii.gz``). Every subject gets
every requested contrast, written on its own grid under ``output/<subject>/``.
A subject with bad input is reported and skipped; the others still run.

Long work runs outside the GUI process (DESIGN.md): :func:`batch_command` is the
command line of a child process that prints ``progress DONE/TOTAL SUBJECT`` lines,
:func:`parse_progress` reads them, :func:`run_batch_process` runs the child and
blocks (console, tests); the module runs the same command with ``qt.QProcess``.
The child is ``python -m SyntheticMRILib.batch``: the ``syntheticmri`` command line
with a lifeline on its standard input. When stdin closes (the parent cancelled, or
died) it stops itself: ``KeyboardInterrupt`` in the main thread, so that
``write_volume`` removes its temporary file, and a hard exit if that has not
ended it within :data:`STOP_GRACE_S`. This is what makes Cancel reach the process
that works in Slicer: ``PythonSlicer`` is a launcher that runs ``python-real`` as
its own child, and ``QProcess.kill()`` ends the launcher only.
"""
from __future__ import annotations

import _thread
import codecs
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .errors import InputError
from .maps import load_maps
from .protocols import Preset
from .synthesis import synthesize_volume
from .volumes import EXTENSIONS, PathLike, check_output, write_volume

__all__ = [
    "find_subjects", "synthesize_subjects", "batch_command", "parse_progress", "run_batch_process", "slicer_python",
    "child_environment", "LineBuffer", "error_line", "remove_partial_files", "child_main", "CANCELLED",
]

MAP_NAMES = ("t1", "t2", "pd")
CHILD_MODULE = "SyntheticMRILib.batch"  # runs the cli with the stdin lifeline (child_main)
CANCELLED = 130  # exit status of a child stopped through its stdin (as after Ctrl-C)
STOP_GRACE_S = 2.0  # after stdin closes: time for a clean stop before the child exits hard
_PROGRESS = re.compile(r"progress (\d+)/(\d+)(?: (.*))?")
_PARTIAL_PREFIX = ".partial-"  # write_volume's temporary files


def _map_file(folder: Path, name: str) -> Path:
    found = [p for p in sorted(folder.iterdir()) if p.name.lower() in {name + ext for ext in EXTENSIONS}]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise InputError(f"{folder.name}: {what} {name} map ({name}.nrrd, {name}.nii.gz, ...); expected exactly one")
    return found[0]


def find_subjects(study: PathLike) -> List[Path]:
    """The sub-folders of ``study`` that hold map files, sorted by name."""
    study = Path(study)
    if not study.is_dir():
        raise InputError(f"{study}: no such folder")
    subjects = [p for p in sorted(study.iterdir()) if p.is_dir() and any(q.name.lower().startswith("t1.") for q in p.iterdir())]
    if not subjects:
        raise InputError(f"{study}: no subject folders with a t1 map inside")
    return subjects


def synthesize_subjects(
    study: PathLike,
    presets: Sequence[Preset],
    output: PathLike,
    device: torch.device = torch.device("cpu"),
    units: str = "ms",
    overwrite: bool = False,
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> Dict[str, str]:
    """Synthesize ``presets`` for every subject of ``study`` into ``output/<subject>/<preset>.nrrd``.

    Shows a progress bar (or calls ``progress(done, total, subject)``, e.g. to drive
    Slicer's progress dialog, and prints skipped subjects as plain lines: tqdm is then
    not needed). Returns the subjects that failed, with why.
    """
    subjects = find_subjects(study)
    failures: Dict[str, str] = {}
    if progress is None:
        from tqdm import tqdm

        bar = tqdm(subjects, desc="subjects", unit="subject")
        steps, report = bar, bar.write
    else:
        steps, report = subjects, lambda message: print(message, flush=True)
    for done, folder in enumerate(steps):
        if progress is not None:
            progress(done, len(subjects), folder.name)
        try:
            targets = {p.name: Path(output) / folder.name / f"{p.name}.nrrd" for p in presets}
            for target in targets.values():
                check_output(target, overwrite)
            maps = load_maps(*(_map_file(folder, name) for name in MAP_NAMES), units=units)
            t1, t2, pd = maps.tensors(device)
            for preset in presets:
                image = synthesize_volume(t1, t2, pd, preset.protocol).cpu().numpy()
                write_volume(maps.volume(image), targets[preset.name], overwrite=overwrite)
        except InputError as error:
            failures[folder.name] = str(error)
            report(f"{folder.name}: skipped: {error}")
    if progress is not None:
        progress(len(subjects), len(subjects), "")
    return failures


# --------------------------------------------------------------------------- out of process
def batch_command(
    python: str,
    study: PathLike,
    presets: Sequence[str],
    output: PathLike,
    units: str = "ms",
    device: str = "auto",
    overwrite: bool = False,
) -> List[str]:
    """The argv of a child that synthesizes ``presets`` (names) for every subject of ``study`` into ``output``,
    printing ``progress DONE/TOTAL SUBJECT`` lines; run it with :func:`child_environment` and a stdin pipe kept open
    (closing it cancels). ``python``: :func:`slicer_python` in Slicer, ``sys.executable`` elsewhere."""
    if not presets:
        raise InputError("choose at least one preset")
    argv = child_command(python, "batch", "--input", str(study))
    for name in presets:
        argv += ["--preset", str(name)]
    argv += ["-o", str(output), "--units", units, "--device", device]
    return argv + (["--overwrite"] if overwrite else []) + ["--progress", "lines"]


def child_command(python: str, *args: str) -> List[str]:
    """The argv of a child running ``syntheticmri ARGS`` that stops when its stdin closes (see :func:`child_main`)."""
    return [str(python), "-m", CHILD_MODULE, *map(str, args)]


def maps_job(python: str, command: str, folder: PathLike, units: str = "ms", device: str = "auto") -> List[str]:
    """The argv of a ``segment`` or ``contrast --learned`` child on ``folder``/{t1,t2,pd}.nrrd, writing into ``folder``:
    ``seg.nrrd`` + ``volumes.csv``, or ``learned/`` (volumes and ``learned.json``). Progress comes as lines."""
    folder = Path(folder)
    maps = [arg for name in MAP_NAMES for arg in (f"--{name}", str(folder / f"{name}.nrrd"))]
    common = [*maps, "--units", units, "--device", device, "--progress", "lines"]
    if command == "segment":
        return child_command(python, "segment", *common, "-o", str(folder / "seg.nrrd"), "--volumes", str(folder / "volumes.csv"))
    if command == "contrast":
        return child_command(python, "contrast", "--learned", *common, "-o", str(folder / "learned"))
    raise InputError(f"unknown maps job {command!r}; use segment or contrast")


def parse_progress(line: str) -> Optional[Tuple[int, int, str]]:
    """``(done, total, subject)`` of a ``progress DONE/TOTAL SUBJECT`` line (subject "" at the end), else None."""
    match = _PROGRESS.fullmatch(line.rstrip("\r\n"))
    return None if match is None else (int(match.group(1)), int(match.group(2)), match.group(3) or "")


def slicer_python(executable: Optional[str] = None) -> str:
    """The interpreter for a child process: Slicer's ``PythonSlicer`` (beside the running executable, else on
    PATH, which Slicer's launcher sets), or this interpreter outside Slicer."""
    executable = executable or sys.executable
    beside = Path(executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    if beside.is_file():
        return str(beside)
    return shutil.which("PythonSlicer") or executable


def child_environment(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``environ`` (default: this process's) with the folder holding SyntheticMRILib first on PYTHONPATH (the
    module's folder in an installed extension, the repository in a checkout) and unbuffered UTF-8 output."""
    environment = dict(os.environ if environ is None else environ)
    paths = [str(Path(__file__).resolve().parent.parent)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["PYTHONUNBUFFERED"] = "1"
    environment["PYTHONIOENCODING"] = "utf-8"  # what LineBuffer and run_batch_process decode, on Windows too
    return environment


def _unwrap(data) -> Union[str, bytes]:
    """str or bytes out of str, bytes or a Qt QByteArray (anything whose ``data()`` gives bytes)."""
    if not isinstance(data, (str, bytes, bytearray)) and hasattr(data, "data"):
        data = data.data()
    return data if isinstance(data, str) else bytes(data)


class LineBuffer:
    """Whole lines out of a stream read in chunks (QProcess reads end anywhere, even inside a UTF-8 character).
    ``feed`` takes str, bytes or a QByteArray as ``readAllStandardOutput()`` returns it."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""

    def feed(self, data) -> List[str]:
        data = _unwrap(data)
        text = self._tail + (data if isinstance(data, str) else self._decoder.decode(data))
        *lines, self._tail = text.split("\n")
        return [line.rstrip("\r") for line in lines]

    def flush(self) -> List[str]:
        """The last line when the stream ended without a newline."""
        rest, self._tail = self._tail + self._decoder.decode(b"", final=True), ""
        return [rest.rstrip("\r")] if rest else []


def error_line(stderr) -> str:
    """The last non-empty line of a child's stderr (str, bytes or QByteArray): its one-line error."""
    text = _unwrap(stderr)
    text = text if isinstance(text, str) else text.decode("utf-8", errors="replace")
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def remove_partial_files(output: PathLike) -> List[Path]:
    """Delete the temporary files that a child killed inside ``write_volume`` may leave under ``output``."""
    output = Path(output)
    partial = [p for p in output.rglob(_PARTIAL_PREFIX + "*") if p.is_file()] if output.is_dir() else []
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def _kill_tree(process: subprocess.Popen) -> None:
    if os.name == "nt":  # the child and everything it started
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True)
        return
    try:  # start_new_session: the group is the child's pid, and holds everything it started
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(stream, queue: Queue, tag: str) -> None:
    for line in iter(stream.readline, ""):
        queue.put((tag, line))
    queue.put((tag, None))


def run_batch_process(
    argv: Sequence[str],
    on_progress: Optional[Callable[[str], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    env: Optional[Mapping[str, str]] = None,
    grace: float = 1.0,
) -> Tuple[int, str]:
    """Run a child (e.g. :func:`batch_command`) to the end and return ``(returncode, stderr_text)``; blocks, for the
    console and tests (the module uses QProcess). Every stdout line goes to ``on_progress(line)`` as it comes (read
    it with :func:`parse_progress`); ``should_cancel()`` is asked between lines and ten times a second. Cancelling
    closes the child's stdin (it stops cleanly, see the module docstring), waits ``grace`` seconds, then kills the
    whole process tree (its own process group / session on POSIX, ``taskkill /T`` on Windows); the return code is
    then non-zero. ``env`` defaults to :func:`child_environment`. In Slicer, ``on_progress`` may update a progress
    dialog and call ``slicer.app.processEvents()``, and ``should_cancel`` return its ``wasCanceled``."""
    group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
    process = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        errors="replace", bufsize=1, env=dict(child_environment() if env is None else env), **group)
    lines: Queue = Queue()
    readers = [threading.Thread(target=_pump, args=(stream, lines, tag), daemon=True)
               for stream, tag in ((process.stdout, "out"), (process.stderr, "err"))]
    for reader in readers:
        reader.start()
    stderr: List[str] = []
    open_streams, cancelled, exited_at = 2, False, None
    while open_streams and (exited_at is None or time.monotonic() - exited_at < 2.0):  # a stray grandchild may hold a pipe
        try:
            tag, line = lines.get(timeout=0.1)
        except Empty:
            tag, line = "", ""
        if line is None:
            open_streams -= 1
        elif tag == "out" and on_progress is not None:
            on_progress(line.rstrip("\r\n"))
        elif tag == "err":
            stderr.append(line)
        if not cancelled and should_cancel is not None and should_cancel():
            cancelled = True
            process.stdin.close()  # the lifeline: the child interrupts itself and cleans up
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            _kill_tree(process)  # whatever is left of the tree
        if exited_at is None and process.poll() is not None:
            exited_at = time.monotonic()
    if not process.stdin.closed:
        process.stdin.close()
    return process.wait(), "".join(stderr)


# --------------------------------------------------------------------------- the child
def _stop_when_stdin_closes(grace: float = STOP_GRACE_S) -> None:
    """Watch stdin in a thread: at end of file, interrupt the main thread, and exit hard ``grace`` seconds later."""
    if sys.stdin is None:
        return

    def watch() -> None:
        try:
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):
                pass
        except (OSError, ValueError):  # a broken pipe (Windows) is an end of file too
            pass
        _thread.interrupt_main()  # KeyboardInterrupt: finally blocks run, write_volume drops its temporary file
        time.sleep(grace)
        os._exit(CANCELLED)  # still alive: stuck in native code

    threading.Thread(target=watch, name="stdin-lifeline", daemon=True).start()


def child_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m SyntheticMRILib.batch ARGS``: ``syntheticmri ARGS``, stopped when its stdin closes. Only for a
    parent that holds the stdin pipe open (from a shell, ``< /dev/null`` would stop it at once)."""
    _stop_when_stdin_closes()
    from .cli import main

    try:
        return main(argv)
    except KeyboardInterrupt:
        print("syntheticmri: cancelled", file=sys.stderr, flush=True)
        return CANCELLED


if __name__ == "__main__":
    sys.exit(child_main())
