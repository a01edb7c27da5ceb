"""A cohort run: a recipe over every subject of a study, resumable, on one machine or a Dask cluster.

Python console (or Slicer's)::

    from SyntheticMRILib.cohort import build_recipe, run_cohort
    recipe = build_recipe(presets=["T1w", "T2-FLAIR"], segment=True)
    report = run_cohort("/data/study", recipe, "/data/synthetic", workers=2)

The same command run again finishes what a killed, cancelled or failed run left: complete outputs are
checked (sha256) and kept, missing or corrupt ones made again (:mod:`.ledger`). Before any work, a run refuses
(nothing written) when a step of the same name was made by another request (another protocol, model, storage or
library version), or an output file exists that no run made; ``overwrite`` remakes them.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from ..errors import InputError
from ..io.volumes import PathLike, write_atomic
from ..jobs import read_structure_volumes, remove_partial_files
from .ledger import DONE, LEDGER, STATUS_FILE, SubjectRecord, read_request, status_rows, write_request, write_status
from .recipe import SUBJECT_VOLUMES, Recipe
from .schedulers import LOCAL, check_scheduler, open_scheduler, run_tasks
from .subject import SubjectResult, SubjectTask, find_subjects, run_subject

__all__ = ["CohortReport", "run_cohort", "throughput", "COHORT_VOLUMES"]

COHORT_VOLUMES = "volumes.csv"  # OUT/volumes.csv: subject x structure (ml), for the subjects segmented


@dataclass
class CohortReport:
    """Counts of outputs kept (already done), made and remade (missing or corrupt); failed subjects with why."""

    subjects: int
    kept: int = 0
    made: int = 0
    remade: int = 0
    failed: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0
    status: Optional[Path] = None
    volumes: Optional[Path] = None

    def summary(self) -> str:
        return (f"{self.subjects} subject(s) in {self.seconds:.1f} s: {self.made} output(s) made, {self.remade} remade "
                f"(missing or corrupt), {self.kept} already done, {len(self.failed)} subject(s) failed")


def throughput(done: int, total: int, seconds: float) -> str:
    """``12.0 subjects/h, 5 min left``: the rate so far and the time the rest takes at that rate."""
    if done == 0 or seconds <= 0:
        return ""
    rate = done / seconds * 3600
    left = (total - done) * seconds / done
    when = f"{left:.0f} s" if left < 120 else f"{left / 60:.0f} min" if left < 7200 else f"{left / 3600:.1f} h"
    return f"{rate:.1f} subjects/h, {when} left"


def _differences(old: dict, new: dict) -> str:
    changed = [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(changed[:3]) + (f" (+{len(changed) - 3} more)" if len(changed) > 3 else "")


def _check_request(output: Path, recipe: Recipe, overwrite: bool) -> List[str]:
    """Refuse a step made before by another request; notes on steps added and left out."""
    recorded = read_request(output)
    for step in recipe.steps:
        before = recorded.get(step.name)
        if before is not None and before["key"] != step.key and not overwrite:
            raise InputError(f"{output}: {step.name} was made by another request ({_differences(before['definition'], dict(step.definition))}); "
                             "--overwrite remakes it, or write to another folder")
    notes = []
    names = {step.name for step in recipe.steps}
    if recorded and names - set(recorded):
        notes.append(f"adds {', '.join(sorted(names - set(recorded)))} to the outputs already in {output}")
    if set(recorded) - names:
        notes.append(f"leaves {', '.join(sorted(set(recorded) - names))} of earlier runs as they are")
    return notes


def _check_foreign(output: Path, subjects: List[Path], recipe: Recipe, overwrite: bool) -> None:
    """Refuse output files that exist and that no run recorded (a user's, or an older tool's)."""
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: not a folder")
    if overwrite or not output.is_dir():
        return
    foreign = [] if (output / LEDGER).is_dir() else [p for p in (output / STATUS_FILE, output / COHORT_VOLUMES) if p.exists()]
    for folder in subjects:
        entries = SubjectRecord.load(output, folder.name).entries
        foreign += [output / folder.name / name for _, name in recipe.files()
                    if name not in entries and (output / folder.name / name).exists()]
    if foreign:
        raise InputError(f"{foreign[0]} exists and no run made it ({len(foreign)} such file(s)); "
                         "--overwrite replaces them, or write to another folder")


@contextmanager
def _lock(output: Path) -> Iterator[None]:
    """One run at a time per output folder (created atomically); the lock of a run killed on this machine (its
    process is gone) is taken over, one from another machine is not (its process cannot be checked from here)."""
    path = output / LEDGER / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            host, _, pid = path.read_text().partition(" ")
            if host != socket.gethostname():
                raise InputError(f"{output}: a batch on {host} holds {path}; delete that file if it is no longer "
                                 "running") from None
            if attempt or (pid.isdigit() and _alive(int(pid))):
                raise InputError(f"{output}: another batch (process {pid}) is writing there; wait for it or stop it") from None
            path.unlink(missing_ok=True)  # its process is gone
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{socket.gethostname()} {os.getpid()}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _write_cohort_volumes(output: Path, records: Dict[str, SubjectRecord]) -> Optional[Path]:
    """``OUT/volumes.csv``: one row per segmented subject, one column per structure (ml)."""
    rows, names = [], None
    for subject, record in records.items():
        entry = record.entries.get(SUBJECT_VOLUMES)
        if entry is not None and entry.state == DONE and (output / subject / SUBJECT_VOLUMES).is_file():
            volumes = read_structure_volumes(output / subject / SUBJECT_VOLUMES)
            names = names or list(volumes)
            rows.append(",".join([subject] + [f"{volumes[name]:.3f}" for name in names]))
    if not rows:
        return None
    return write_atomic(output / COHORT_VOLUMES, "\n".join([",".join(["subject"] + names)] + rows) + "\n")


def _lost(task: SubjectTask, error: BaseException) -> SubjectResult:
    """What a subject whose worker died left unfinished (its finished outputs are recorded and stay)."""
    entries = SubjectRecord.load(task.output, task.subject).entries
    names = [name for _, name in task.recipe.files() if getattr(entries.get(name), "state", "") != DONE]
    return SubjectResult(task.subject, failed=names, error=f"its worker was lost ({type(error).__name__}); rerun to finish it")


def run_cohort(
    study: PathLike,
    recipe: Recipe,
    output: PathLike,
    units: str = "ms",
    device: str = "auto",
    overwrite: bool = False,
    retry_failed: bool = False,
    scheduler: str = LOCAL,
    workers: int = 1,
    progress: Optional[Callable[[int, int, str], None]] = None,
    log: Callable[[str], None] = print,
) -> CohortReport:
    """Run ``recipe`` for every subject folder of ``study`` into ``output/<subject>/``; write ``status.csv`` (and
    ``volumes.csv`` when segmenting) in ``output``.

    Args:
        study: one sub-folder per subject, with its ``t1``, ``t2`` and ``pd`` maps (any supported format).
        recipe: from :func:`~SyntheticMRILib.cohort.recipe.build_recipe`.
        output: the cohort's output folder; rerunning into it resumes (see the module docstring).
        units: of the T1/T2 maps, ``ms`` or ``s``.
        device: ``auto``, ``cpu`` or ``cuda``, resolved on each worker.
        overwrite: remake every requested output, and replace files no run made.
        retry_failed: try again the subjects that failed before (they are skipped otherwise).
        scheduler: ``local`` or the address of a Dask scheduler (see :mod:`.schedulers`).
        workers: processes of the local scheduler.
        progress: ``progress(done, total, text)`` after each subject (text: the subject and :func:`throughput`).
        log: where a failed subject's line goes.

    Examples:
        >>> report = run_cohort("study", build_recipe(["T1w"]), "out")  # doctest: +SKIP
        >>> report.failed  # doctest: +SKIP
        {}
    """
    start = time.perf_counter()
    output = Path(output)
    check_scheduler(scheduler, workers)
    subjects = find_subjects(study)
    notes = _check_request(output, recipe, overwrite)  # both checks before anything is written
    _check_foreign(output, subjects, recipe, overwrite)
    report = CohortReport(len(subjects), notes=notes)
    for note in notes:
        log(f"note: {note}")
    with open_scheduler(scheduler, workers) as client, _lock(output):
        remove_partial_files(output)  # what a killed run was writing
        recorded = read_request(output)
        recorded.update({step.name: {"key": step.key, "definition": dict(step.definition), "files": list(step.files)}
                         for step in recipe.steps})
        write_request(output, recorded)
        tasks = [SubjectTask(folder.name, folder, output, recipe, units, device, overwrite, retry_failed)
                 for folder in subjects]
        if progress is not None:
            progress(0, len(tasks), "")
        failed: Dict[str, tuple] = {}
        for done, result in enumerate(run_tasks(run_subject, tasks, client, on_lost=_lost), start=1):
            report.kept += len(result.kept)
            report.made += len(result.made)
            report.remade += len(result.remade)
            if result.error:
                report.failed[result.subject] = result.error
                failed[result.subject] = (result.failed, result.error)
                log(f"{result.subject}: failed: {result.error}")
            if progress is not None:
                rate = throughput(done, len(tasks), time.perf_counter() - start)
                progress(done, len(tasks), f"{result.subject} ({rate})" if rate else result.subject)
        records = {folder.name: SubjectRecord.load(output, folder.name) for folder in subjects}  # read once, for both
        report.status = write_status(output, status_rows(records, [(s.name, f) for s, f in recipe.files()], failed))
        if any(step.kind == "segment" for step in recipe.steps):
            report.volumes = _write_cohort_volumes(output, records)
    report.seconds = time.perf_counter() - start
    return report
