"""One subject of a cohort: what a worker runs (in this process, or on a Dask worker anywhere).

:func:`run_subject` checks the subject's recorded outputs (:mod:`.ledger`), makes only those missing,
corrupt or never made, and records each one as it lands. It never raises for the subject's own problems
(bad maps, a changed map file): they are recorded as failed and returned, so one subject cannot stop the
others. The model is loaded once per worker process and device (:func:`_model`), not once per subject.
"""
from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .. import __version__
from ..errors import InputError
from ..io.maps import MAP_NAMES
from ..io.volumes import EXTENSIONS, PathLike, partial_path
from ..resources import sha256
from .ledger import CORRUPT, DONE, FAILED, FOREIGN, MISSING, NEW, OUTDATED, STALE, Entry, SubjectRecord
from .recipe import Recipe, Step

__all__ = ["SubjectTask", "SubjectResult", "find_subjects", "map_files", "run_subject"]


def map_files(folder: Path) -> List[Path]:
    """The subject's ``t1``, ``t2`` and ``pd`` files (any supported format), exactly one of each."""
    files = []
    for name in MAP_NAMES:
        found = [p for p in sorted(folder.iterdir()) if p.name.lower() in {name + ext for ext in EXTENSIONS}]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise InputError(f"{folder.name}: {what} {name} map ({name}.nrrd, {name}.nii.gz, ...); expected exactly one")
        files.append(found[0])
    return files


def find_subjects(study: PathLike) -> List[Path]:
    """The sub-folders of ``study`` that hold map files (a ``t1.*`` at least), sorted by name."""
    study = Path(study)
    if not study.is_dir():
        raise InputError(f"{study}: no such folder")
    subjects = [p for p in sorted(study.iterdir()) if p.is_dir() and any(q.name.lower().startswith("t1.") for q in p.iterdir())]
    if not subjects:
        raise InputError(f"{study}: no subject folders with a t1 map inside")
    return subjects


@dataclass(frozen=True)
class SubjectTask:
    """Everything a worker needs for one subject; plain data, so it pickles to a Dask worker."""

    subject: str
    maps_folder: Path
    output: Path  # the cohort's output folder; the subject's files go to output/subject/
    recipe: Recipe
    units: str = "ms"
    device: str = "auto"
    overwrite: bool = False
    retry_failed: bool = False


@dataclass
class SubjectResult:
    """What became of a subject's requested outputs: ``kept`` (already done), ``made`` (new), ``remade``
    (missing or corrupt), and the error that stopped the rest (``error``; then ``failed`` lists them)."""

    subject: str
    kept: List[str] = field(default_factory=list)
    made: List[str] = field(default_factory=list)
    remade: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


class _Refused(InputError):
    """An output this run may not replace without ``--overwrite``."""


def _maps_key(files: List[Path]) -> str:
    return hashlib.sha256("".join(sha256(f) for f in files).encode()).hexdigest()


@functools.lru_cache(maxsize=2)
def _model(path: str, device: str):
    from ..models.segmenter import load_model
    import torch

    return load_model(path, torch.device(device))


def _outputs(step: Step, maps, device, wanted: List[str], model: Optional[Path]) -> Dict[str, Callable[[Path], None]]:
    """file -> a function writing it to a given path, for the ``wanted`` files of ``step``."""
    from ..io.provenance import write_contrast
    from ..physics.synthesis import synthesize_volume

    writers: Dict[str, Callable[[Path], None]] = {}
    if step.kind in ("contrast", "learned"):
        tensors = maps.tensors(device)
        for name, provenance in step.contrasts:
            if name in wanted:
                def write(path: Path, provenance=provenance) -> None:
                    image = synthesize_volume(*tensors, provenance.protocol).cpu().numpy()
                    write_contrast(maps.volume(image), path, provenance, overwrite=True, bits=step.definition.get("bits"))
                writers[name] = write
    elif step.kind == "segment":
        from ..io.labels import STRUCTURES
        from ..io.volumes import write_volume
        from ..jobs import write_structure_volumes
        from ..models.segmenter import label_volumes_ml, segment
        from .recipe import SEGMENTATION, SUBJECT_VOLUMES

        labels = segment(maps, _model(str(model), str(device)), device)
        writers[SEGMENTATION] = lambda path: write_volume(labels, path, overwrite=True)
        writers[SUBJECT_VOLUMES] = lambda path: write_structure_volumes(path, label_volumes_ml(labels), STRUCTURES)
        writers = {name: writer for name, writer in writers.items() if name in wanted}
    return writers


def _commit(record: SubjectRecord, folder: Path, name: str, write: Callable[[Path], None], step: Step, maps: str) -> None:
    """Write ``name`` under a temporary name, record its sha256, then rename it into place (see :mod:`.ledger`)."""
    start = time.perf_counter()
    final = folder / name
    temporary = partial_path(final)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        write(temporary)
        record.entries[name] = Entry(step.name, step.key, maps, DONE, sha256(temporary), temporary.stat().st_size,
                                     round(time.perf_counter() - start, 3), "", __version__)
        record.save()
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def run_subject(task: SubjectTask) -> SubjectResult:
    """Make what ``task`` asks that is not already done and valid; record everything (see the module docstring)."""
    start = time.perf_counter()
    result = SubjectResult(task.subject)
    record = SubjectRecord.load(task.output, task.subject)
    folder = task.output / task.subject
    requested = task.recipe.files()
    before = [record.entries[name] for _, name in requested if name in record.entries]
    failed_before = [entry for entry in before if entry.state == FAILED]
    if failed_before and not (task.retry_failed or task.overwrite):
        result.failed = [name for _, name in requested if record.entries.get(name, failed_before[0]).state != DONE]
        result.error = f"failed before ({failed_before[0].error}); --retry-failed tries again"
        return result
    maps_key, todo = "", []
    try:
        files = map_files(task.maps_folder)
        maps_key = _maps_key(files)
        for step, name in requested:
            verdict = record.verdict(name, folder, step.key, maps_key)
            if task.overwrite or verdict in (NEW, MISSING, CORRUPT, OUTDATED, FAILED):
                todo.append((step, name, verdict))
            elif verdict == STALE:
                raise _Refused(f"{name} was made from other maps (they changed since); --overwrite remakes it")
            elif verdict == FOREIGN:
                raise _Refused(f"{folder / name} exists and no run made it; --overwrite replaces it")
            else:
                result.kept.append(name)
        if todo:
            from ..devices import pick_device
            from ..io.maps import load_maps

            device = pick_device(task.device)
            maps = load_maps(*files, units=task.units)
            for step in task.recipe.steps:
                wanted = [name for s, name, _ in todo if s is step]
                if not wanted:
                    continue
                for name, write in _outputs(step, maps, device, wanted, task.recipe.model).items():
                    _commit(record, folder, name, write, step, maps_key)
                    verdict = next(v for s, n, v in todo if n == name)
                    (result.remade if verdict in (MISSING, CORRUPT, OUTDATED) else result.made).append(name)
    except Exception as error:  # noqa: BLE001 -- any failure is this subject's, recorded, never the cohort's
        result.error = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        done = set(result.kept) | set(result.made) | set(result.remade)
        result.failed = [name for _, name in requested if name not in done]
        if not isinstance(error, _Refused):  # a refusal is not recorded: it stays one until --overwrite
            for step, name in requested:
                if name in result.failed:
                    record.entries[name] = Entry(step.name, step.key, maps_key, FAILED, error=result.error,
                                                 version=__version__)
            record.save()
    result.seconds = time.perf_counter() - start
    return result
