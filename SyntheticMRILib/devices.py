"""Choosing the torch device: the local GPU when there is one, the CPU otherwise."""
from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["DEVICES", "pick_device"]

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when available; asking for ``cuda`` without a GPU is an :class:`InputError`."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)
