"""Choosing the torch device: the local GPU when there is one, the CPU otherwise.

torch is imported on the first call, so that :data:`DEVICES` serves the command line's
and the GUI's choices before PyTorch is installed."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # annotations only: torch loads on first use
    import torch

__all__ = ["DEVICES", "pick_device"]

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when available; asking for ``cuda`` without a GPU is an :class:`InputError`."""
    import torch

    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)
