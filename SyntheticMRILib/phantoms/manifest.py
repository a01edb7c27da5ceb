"""The manifest of a phantom folder, ``manifest.json``: what ``syntheticmri phantom`` generated (split, seed,
sources, variation) and every subject's record with its files relative to the folder. Its one writer and reader."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping

from ..errors import InputError
from ..io.volumes import PathLike

__all__ = ["MANIFEST", "manifest_path", "has_manifest", "read_manifest", "write_manifest"]

MANIFEST = "manifest.json"


def manifest_path(folder: PathLike) -> Path:
    return Path(folder) / MANIFEST


def has_manifest(folder: PathLike) -> bool:
    """True when ``folder`` is a phantom folder (it holds a manifest)."""
    return manifest_path(folder).is_file()


def read_manifest(folder: PathLike) -> Dict[str, Any]:
    """The manifest of a phantom folder, or :class:`InputError` naming the command that writes one."""
    path = manifest_path(folder)
    if not path.is_file():
        raise InputError(f"{path}: not found; write {folder} with syntheticmri phantom")
    return json.loads(path.read_text())


def write_manifest(folder: PathLike, manifest: Mapping[str, Any]) -> Path:
    path = manifest_path(folder)
    path.write_text(json.dumps(manifest, indent=1))
    return path
