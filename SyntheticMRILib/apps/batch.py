"""Batch synthesis over a folder of subjects, for the command line, the Slicer Python console and the module.

A study folder holds one sub-folder per subject with its maps named ``t1``,
``t2`` and ``pd`` (any supported format, e.g. ``t1.nii.gz``). Every subject gets
every requested contrast, written on its own grid under ``output/<subject>/`` with its
provenance in the header (:mod:`SyntheticMRILib.io.provenance`).
A subject with bad input is reported and skipped; the others still run.
Out of process (the Slicer module): :func:`SyntheticMRILib.jobs.batch_command`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..errors import InputError
from ..io.maps import MAP_NAMES, load_maps
from ..io.provenance import Provenance, write_contrast
from ..io.volumes import EXTENSIONS, PathLike, check_output
from ..physics.protocols import Preset
from ..physics.synthesis import synthesize_volume

__all__ = ["find_subjects", "synthesize_subjects"]


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
    bits: Optional[int] = None,
) -> Dict[str, str]:
    """Synthesize ``presets`` for every subject of ``study`` into ``output/<subject>/<preset>.nrrd``
    (float32, or ``bits``-bit scaled integers: see :func:`~SyntheticMRILib.io.volumes.quantize`).

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
                write_contrast(maps.volume(image), targets[preset.name], Provenance.of_preset(preset),
                               overwrite=overwrite, bits=bits)
        except InputError as error:
            failures[folder.name] = str(error)
            report(f"{folder.name}: skipped: {error}")
    if progress is not None:
        progress(len(subjects), len(subjects), "")
    return failures
