"""Where the shipped resources live: the top-level ``Resources/`` folder of the extension.

The package sits next to ``Resources/`` in the source tree (``pip install -e .``)
and in the installed Slicer extension alike, so the path is found relative to
this file; ``SYNTHETICMRI_RESOURCES`` overrides it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Union

from .errors import InputError

__all__ = ["resource_path", "sample_paths", "sha256"]


def resource_path(*parts: str) -> Path:
    """A path inside the Resources folder; :class:`InputError` if it is missing."""
    root = Path(os.environ.get("SYNTHETICMRI_RESOURCES", Path(__file__).resolve().parents[1] / "Resources"))
    path = root.joinpath(*parts)
    if not path.exists():
        raise InputError(f"resource {path} not found; install from a source checkout (pip install -e .) or set SYNTHETICMRI_RESOURCES")
    return path


def sample_paths() -> Dict[str, Path]:
    """The bundled sample: T1, T2 (ms) and PD (fraction) maps and the label map they were made from."""
    return {name: resource_path("SampleData", f"{name}.nrrd") for name in ("t1", "t2", "pd", "labels")}


def sha256(path: Union[str, os.PathLike]) -> str:
    """The SHA-256 of a file (hex), read in 1 MiB blocks: how shipped models and fetched sources are checked."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
