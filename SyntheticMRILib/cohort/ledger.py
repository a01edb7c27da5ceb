"""The bookkeeping of a cohort run, kept in its output folder so that any rerun can finish the job.

::

    OUT/.syntheticmri/request.json        every step ever run into OUT: name -> key, definition, files
    OUT/.syntheticmri/subjects/<s>.json   per output of subject <s>: step, key, maps, state, sha256, bytes, seconds
    OUT/status.csv                        the table of all of them (made from the subject records)

A worker owns its subject's record and rewrites it whole (atomically) after each output. An output's
entry is written *before* the output is renamed into place, with the sha256 of the bytes about to appear,
so that a process killed at any instant leaves a state a rerun reads correctly:

* entry and file agree (sha256) -> done, skipped;
* entry but no file, or other bytes (killed between the two, truncated later) -> made again;
* file and no entry -> not this run's: refused unless ``--overwrite``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from ..errors import InputError
from ..io.volumes import PathLike, write_atomic
from ..resources import sha256

__all__ = ["LEDGER", "STATUS_FILE", "STATUS_COLUMNS", "DONE", "FAILED", "PENDING", "Entry", "SubjectRecord",
           "read_request", "write_request", "status_rows", "write_status"]

LEDGER, STATUS_FILE = ".syntheticmri", "status.csv"
STATUS_COLUMNS = ("subject", "step", "output", "state", "error", "seconds", "version", "sha256")
DONE, FAILED, PENDING = "done", "failed", "pending"  # PENDING: requested, not (yet) made; only in status.csv
# What a rerun finds for one output (Entry.verdict). OUTDATED: made under an earlier definition of its step, which
# the run's request check has already accepted (an --overwrite run that was stopped): made again. STALE: made from
# other maps: refused until --overwrite.
NEW, MISSING, CORRUPT, OUTDATED, STALE, FOREIGN = "new", "missing", "corrupt", "outdated", "stale", "foreign"


@dataclass
class Entry:
    """What happened to one output file of a subject."""

    step: str
    key: str  # the step's key (recipe.Step.key) when it was made
    maps: str  # sha256 of the subject's three map files then
    state: str  # DONE or FAILED
    sha256: str = ""
    bytes: int = 0
    seconds: float = 0.0
    error: str = ""
    version: str = ""

    def verdict(self, path: Path, key: str, maps: str) -> str:
        """DONE, FAILED, STALE (made from other maps), OUTDATED (by another definition of its step), MISSING or
        CORRUPT."""
        if self.state == FAILED:
            return FAILED
        if self.maps != maps:
            return STALE
        if self.key != key:
            return OUTDATED
        if not path.is_file():
            return MISSING
        if path.stat().st_size != self.bytes or sha256(path) != self.sha256:
            return CORRUPT
        return DONE


@dataclass
class SubjectRecord:
    """The entries of one subject, by output file name (relative to the subject's output folder)."""

    path: Path
    entries: Dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, output: PathLike, subject: str) -> "SubjectRecord":
        path = Path(output) / LEDGER / "subjects" / f"{subject}.json"
        if not path.is_file():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, {name: Entry(**entry) for name, entry in data["outputs"].items()})
        except (ValueError, KeyError, TypeError):  # unreadable (edited by hand?): start the subject's record over
            return cls(path)

    def verdict(self, name: str, folder: Path, key: str, maps: str) -> str:
        entry = self.entries.get(name)
        if entry is None:
            return FOREIGN if (folder / name).exists() else NEW
        return entry.verdict(folder / name, key, maps)

    def save(self) -> None:
        outputs = {name: asdict(entry) for name, entry in sorted(self.entries.items())}
        write_atomic(self.path, json.dumps({"outputs": outputs}, indent=1))


def read_request(output: PathLike) -> Dict[str, dict]:
    """The steps recorded in ``OUT/.syntheticmri/request.json``: name -> {key, definition, files}."""
    path = Path(output) / LEDGER / "request.json"
    if not path.is_file():
        return {}
    try:
        steps = json.loads(path.read_text(encoding="utf-8"))["steps"]
        if isinstance(steps, dict) and all(isinstance(s, dict) and "key" in s for s in steps.values()):
            return steps
    except (ValueError, KeyError, TypeError):
        pass
    raise InputError(f"{path}: unreadable (edited by hand?); restore it, or write to another folder")


def write_request(output: PathLike, steps: Mapping[str, dict]) -> None:
    write_atomic(Path(output) / LEDGER / "request.json", json.dumps({"steps": dict(sorted(steps.items()))}, indent=1))


def status_rows(records: Mapping[str, SubjectRecord], requested: Sequence[tuple],
                failed: Optional[Mapping[str, tuple]] = None) -> List[dict]:
    """One row per subject (``records``: subject -> its record, in table order) and requested (step name, file): its
    recorded entry, or PENDING; ``failed`` (subject -> (files, error)) overrides it with this run's failures that are
    not recorded (refusals, lost workers)."""
    rows, failed = [], failed or {}
    for subject, record in records.items():
        files, error = failed.get(subject, ((), ""))
        for step, name in requested:
            entry = record.entries.get(name)
            row = dict(subject=subject, step=step, output=name, state=PENDING, error="", seconds="", version="",
                       sha256="")
            if entry is not None and entry.step == step:
                row.update(state=entry.state, error=entry.error, seconds=f"{entry.seconds:.3f}", version=entry.version,
                           sha256=entry.sha256)
            if name in files:
                row.update(state=FAILED, error=error)
            rows.append(row)
    return rows


def _csv(rows: Iterable[Mapping], columns: Sequence[str]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_status(output: PathLike, rows: Sequence[Mapping]) -> Path:
    """``OUT/status.csv`` (:data:`STATUS_COLUMNS`)."""
    return write_atomic(Path(output) / STATUS_FILE, _csv(rows, STATUS_COLUMNS))
