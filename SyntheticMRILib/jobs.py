"""Long work out of process: the child's command line, its progress lines, its job folder, and a blocking runner.

DESIGN.md: whole-volume inference and batches run outside the GUI process. This
module is the one place for the protocol between the two sides:

* the argv of a child (:func:`batch_command`, :func:`maps_job`, :func:`routine_maps_job`), run with
  :func:`child_environment` and a stdin pipe held open: the child
  (:mod:`SyntheticMRILib.apps.child`) stops itself when that pipe closes;
* its progress lines, ``progress DONE/TOTAL WHAT``: :func:`progress_line` prints
  them, :func:`parse_progress` reads them;
* the job folder of a maps job: the maps the GUI writes (:func:`write_job_maps`),
  the results the child writes and the GUI reads (``seg.nrrd`` + ``volumes.csv``,
  ``learned/`` with ``learned.json``); the routine series of a ``maps`` job and the maps it writes (``maps/``);
  the scan of a ``reparam`` job (``input.nrrd``), the physics engine's maps it keeps (``maps/``) and its result
  (``result.nrrd``);
* :func:`run_batch_process` runs a child to the end and blocks (console, tests);
  the Slicer module runs the same argv with ``qt.QProcess``
  (:mod:`SyntheticMRILib.slicer.process`).

Why a stdin lifeline: ``PythonSlicer`` is a launcher that runs ``python-real`` as
its own child, and ``QProcess.kill()`` ends the launcher only.
"""
from __future__ import annotations

import codecs
import csv
import json
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
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import InputError
from .io.maps import MAP_NAMES
from .io.volumes import PARTIAL_PREFIX, PathLike
from .physics.routine import RANGES_MS, SERIES

if TYPE_CHECKING:  # annotations only
    from .physics.protocols import Protocol

__all__ = [
    "CHILD_MODULE", "CANCELLED", "progress_line", "parse_progress", "batch_command", "child_command", "maps_job",
    "routine_maps_job", "reparam_job", "REPARAM_ENGINES",
    "slicer_python", "child_environment", "LineBuffer", "error_line", "remove_partial_files", "run_batch_process",
    "write_job_maps", "write_structure_volumes", "read_structure_volumes", "write_learned_index", "read_learned_index",
]

CHILD_MODULE = "SyntheticMRILib.apps.child"  # runs the cli with the stdin lifeline
CANCELLED = 130  # exit status of a child stopped through its stdin (as after Ctrl-C)
_PROGRESS = re.compile(r"progress (\d+)/(\d+)(?: (.*))?")
SEGMENTATION_FILE, VOLUMES_FILE, LEARNED_FOLDER, LEARNED_INDEX = "seg.nrrd", "volumes.csv", "learned", "learned.json"
ESTIMATED_MAPS_FOLDER = "maps"  # what a routine_maps_job child writes: t1.nrrd, t2.nrrd (ms), pd.nrrd
# A reparam_job: the scan the GUI writes (REPARAM_INPUT.nrrd), the physics engine's maps and scan.json the child
# keeps (SCAN_MAPS_FOLDER), the re-parameterized scan it writes (REPARAM_RESULT).
REPARAM_INPUT, SCAN_MAPS_FOLDER, REPARAM_RESULT = "input", "maps", "result.nrrd"
REPARAM_ENGINES = ("physics", "direct")  # models.reparam.ENGINES, without importing torch (the GUI lists them)


# --------------------------------------------------------------------------- progress lines
def progress_line(done: int, total: int, what: str = "") -> str:
    """``progress DONE/TOTAL WHAT``: one step of a child's work, for a GUI reading its stdout."""
    return f"progress {done}/{total} {what}"


def parse_progress(line: str) -> Optional[Tuple[int, int, str]]:
    """``(done, total, what)`` of a ``progress DONE/TOTAL WHAT`` line (``what`` "" at the end), else None."""
    match = _PROGRESS.fullmatch(line.rstrip("\r\n"))
    return None if match is None else (int(match.group(1)), int(match.group(2)), match.group(3) or "")


# --------------------------------------------------------------------------- the job folder of a maps job
def write_job_maps(folder: PathLike, volumes: Sequence, names: Sequence[str] = MAP_NAMES) -> None:
    """The T1, T2 and PD volumes (:class:`~SyntheticMRILib.io.volumes.Volume`) as the child reads them; with
    ``names`` :data:`~SyntheticMRILib.physics.routine.SERIES`, the T1w, T2w and FLAIR series of a ``maps`` job."""
    from .io.volumes import write_volume

    for name, volume in zip(names, volumes):
        write_volume(volume, Path(folder) / f"{name}.nrrd")


def write_structure_volumes(path: PathLike, volumes_ml: Mapping[str, float], labels: Mapping[str, int]) -> None:
    """``structure,label,volume_ml`` rows: what ``segment --volumes`` writes (its folder made if missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("structure,label,volume_ml\n" + "".join(
        f"{name},{labels[name]},{ml:.3f}\n" for name, ml in volumes_ml.items()))


def read_structure_volumes(path: PathLike) -> Dict[str, float]:
    """The structure volumes (ml) of a :func:`write_structure_volumes` file."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["structure"]: float(row["volume_ml"]) for row in csv.DictReader(handle)}


def write_learned_index(folder: PathLike, protocols: Sequence, files: Sequence[PathLike]) -> Path:
    """``learned.json``: each learned contrast's file name and protocol (ms, degrees)."""
    path = Path(folder) / LEARNED_INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(
        [{"file": Path(file).name, "sequence": p.sequence, **p.values()} for p, file in zip(protocols, files)], indent=1))
    return path


def read_learned_index(folder: PathLike) -> List[Tuple[Path, Protocol]]:
    """``(volume path, protocol)`` of each contrast listed in ``folder/learned.json``."""
    from .physics.protocols import Protocol

    entries = json.loads((Path(folder) / LEARNED_INDEX).read_text())
    return [(Path(folder) / entry.pop("file"), Protocol(**entry)) for entry in entries]


# --------------------------------------------------------------------------- argv of a child
def batch_command(
    python: str,
    study: PathLike,
    presets: Sequence[str],
    output: PathLike,
    units: str = "ms",
    device: str = "auto",
    overwrite: bool = False,
    learned: bool = False,
    segment: bool = False,
    retry_failed: bool = False,
    workers: int = 1,
) -> List[str]:
    """The argv of a child that runs ``syntheticmri batch`` (``presets`` by name, the learned contrasts, the
    segmentation) for every subject of ``study`` into ``output`` on ``workers`` processes, printing
    ``progress DONE/TOTAL SUBJECT (RATE, TIME left)`` lines; run it with :func:`child_environment` and a stdin pipe
    kept open (closing it cancels, workers included). ``python``: :func:`slicer_python` in Slicer, ``sys.executable``
    elsewhere."""
    if not (presets or learned or segment):
        raise InputError("choose at least one contrast, the learned contrasts or the segmentation")
    argv = child_command(python, "batch", "--input", str(study))
    for name in presets:
        argv += ["--preset", str(name)]
    argv += ["-o", str(output), "--units", units, "--device", device, "--workers", str(int(workers))]
    flags = (("--learned", learned), ("--segment", segment), ("--retry-failed", retry_failed), ("--overwrite", overwrite))
    return argv + [flag for flag, wanted in flags if wanted] + ["--progress", "lines"]


def child_command(python: str, *args: str) -> List[str]:
    """The argv of a child running ``syntheticmri ARGS`` that stops when its stdin closes (see :mod:`SyntheticMRILib.apps.child`)."""
    return [str(python), "-m", CHILD_MODULE, *map(str, args)]


def maps_job(python: str, command: str, folder: PathLike, units: str = "ms", device: str = "auto") -> List[str]:
    """The argv of a ``segment`` or ``contrast --learned`` child on ``folder``/{t1,t2,pd}.nrrd, writing into ``folder``:
    ``seg.nrrd`` + ``volumes.csv``, or ``learned/`` (volumes and ``learned.json``). Progress comes as lines."""
    folder = Path(folder)
    maps = [arg for name in MAP_NAMES for arg in (f"--{name}", str(folder / f"{name}.nrrd"))]
    common = [*maps, "--units", units, "--device", device, "--progress", "lines"]
    if command == "segment":
        return child_command(python, "segment", *common, "-o", str(folder / SEGMENTATION_FILE),
                             "--volumes", str(folder / VOLUMES_FILE))
    if command == "contrast":
        return child_command(python, "contrast", "--learned", *common, "-o", str(folder / LEARNED_FOLDER))
    raise InputError(f"unknown maps job {command!r}; use segment or contrast")


def routine_maps_job(python: str, folder: PathLike, values: Mapping[str, Mapping[str, Optional[float]]],
                     device: str = "auto", model: Optional[PathLike] = None) -> List[str]:
    """The argv of a ``maps`` child on ``folder``/{t1w,t2w,flair}.nrrd with their TR/TE/TI (``values[series]``,
    ms), writing T1/T2/PD into ``folder``/``maps/``; ``model`` None: the shipped one. Progress comes as lines.
    A value that is missing is left out, so that the child's one-line error names it."""
    folder, argv = Path(folder), []
    for series in SERIES:
        given = values.get(series, {})
        argv += [f"--{series}", str(folder / f"{series}.nrrd")]
        argv += [arg for name in RANGES_MS[series] if given.get(name) is not None
                 for arg in (f"--{series}-{name}", repr(float(given[name])))]
    argv += ["-o", str(folder / ESTIMATED_MAPS_FOLDER), "--device", device, "--progress", "lines"]
    return child_command(python, "maps", *argv, *(["--model", str(model)] if model is not None else []))


def reparam_job(python: str, folder: PathLike, protocol: Protocol, device: str = "auto",
                model: Optional[PathLike] = None, engine: str = "physics", target: Optional[Protocol] = None) -> List[str]:
    """The argv of a ``reparam`` child on ``folder``/input.nrrd acquired at ``protocol`` (SE or IR, ms), writing
    ``folder``/result.nrrd at ``target``; the physics engine also keeps its maps in ``folder``/maps/ (any target is
    then the physics layer alone), and its ``target`` defaults to ``protocol`` (the maps are the point); the direct
    engine needs one. ``model`` None: the shipped one. Progress comes as lines."""
    if engine not in REPARAM_ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose {' or '.join(REPARAM_ENGINES)}")
    if target is None:
        if engine != "physics":
            raise InputError("the direct engine needs a target protocol")
        target = protocol
    folder = Path(folder)
    argv = ["--input", str(folder / f"{REPARAM_INPUT}.nrrd"), "--sequence", protocol.sequence]
    argv += [arg for name, value in protocol.values().items() for arg in (f"--{name}", repr(float(value)))]
    argv += ["--to-sequence", target.sequence]
    argv += [arg for name, value in target.values().items() for arg in (f"--to-{name}", repr(float(value)))]
    argv += ["--engine", engine, "-o", str(folder / REPARAM_RESULT), "--device", device, "--progress", "lines"]
    if engine == "physics":
        argv += ["--keep-maps", str(folder / SCAN_MAPS_FOLDER)]
    return child_command(python, "reparam", *argv, *(["--model", str(model)] if model is not None else []))


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
    paths = [str(Path(__file__).resolve().parents[1])] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
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
    partial = [p for p in output.rglob(PARTIAL_PREFIX + "*") if p.is_file()] if output.is_dir() else []
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
