"""Installing SyntheticMRILib's Python dependencies into Slicer on first use, never at import.

Slicer ships numpy and SimpleITK; torch and the extras are installed behind one
confirmation: torch through the PyTorch Utils extension where present (it picks
the build for the GPU driver), else from PyPI. The requirements here are those
of ``pyproject.toml`` (a test keeps them equal). Everything that talks to Slicer
is passed in, so the decisions are tested without it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from typing import Callable, List, Optional, Sequence

__all__ = ["TORCH_MINIMUM", "EXTRA_REQUIREMENTS", "missing_packages", "requirements", "install_packages"]

TORCH_MINIMUM = (2, 1)
# tqdm, matplotlib, monai, scipy and distributed serve progress bars, figures, the segmenter and batches on several
# processes: installed with the segmenter or a batch that needs them.
EXTRA_REQUIREMENTS = {"tqdm": "tqdm>=4.60", "matplotlib": "matplotlib>=3.5", "monai": "monai>=1.3", "scipy": "scipy>=1.9",
                      "distributed": "distributed>=2024.1"}


def _version_tuple(version: str) -> tuple:
    return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2])


def missing_packages(extras: bool = False, find_spec: Callable = importlib.util.find_spec,
                     version: Callable[[str], str] = importlib.metadata.version) -> List[str]:
    """What to install before SyntheticMRILib runs: torch (also when older than :data:`TORCH_MINIMUM`) and,
    with ``extras``, the packages of :data:`EXTRA_REQUIREMENTS` that are not importable."""
    missing = [name for name in ["torch", *(EXTRA_REQUIREMENTS if extras else ())] if find_spec(name) is None]
    if "torch" not in missing:
        try:
            if _version_tuple(version("torch")) < TORCH_MINIMUM:
                missing.insert(0, "torch")
        except importlib.metadata.PackageNotFoundError:
            pass
    return missing


def requirements(packages: Sequence[str]) -> List[str]:
    """pip requirement strings of ``packages`` (names from :func:`missing_packages`)."""
    return ["torch>=%d.%d" % TORCH_MINIMUM if name == "torch" else EXTRA_REQUIREMENTS[name] for name in packages]


def install_packages(packages: Sequence[str], pip_install: Callable[[str], None],
                     install_torch: Optional[Callable[[str], None]] = None) -> None:
    """Install ``packages``: torch with ``install_torch(requirement)`` when given (PyTorch Utils), else with
    ``pip_install``, then the others with one ``pip_install``. Raises what the installers raise."""
    wanted = list(packages)
    if "torch" in wanted:
        (install_torch or pip_install)(requirements(["torch"])[0])
        wanted.remove("torch")
    if wanted:
        pip_install(" ".join(requirements(wanted)))
    importlib.invalidate_caches()
