"""A torch ``Dataset`` of 2-D slices of phantom subjects, from a folder written by ``syntheticmri phantom``
or generated on the fly by :mod:`SyntheticMRILib.phantoms.generator`."""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import InputError
from .generator import VARIATION, SubjectSpec, generate_subject, plan_split
from .manifest import read_manifest
from ..io.volumes import PathLike, Volume, read_volume

__all__ = ["PhantomSlices"]


_AXES = {"axial": 2, "coronal": 1, "sagittal": 0}  # LPS component each view's normal follows


def _slice_axis(volume: Volume, axis: Union[str, int]) -> int:
    """The array axis (k, j, i order) whose direction is closest to the view's normal, or an int as given."""
    if isinstance(axis, int):
        return axis
    if axis not in _AXES:
        raise InputError(f"unknown axis {axis!r}; use axial, coronal, sagittal or 0-2")
    columns = np.abs(np.asarray(volume.direction, dtype=float).reshape(3, 3)[_AXES[axis]])  # per ITK axis i, j, k
    return 2 - int(np.argmax(columns))


class PhantomSlices(torch.utils.data.Dataset):
    """2-D slices of phantom subjects: ``t1``, ``t2`` (ms), ``pd`` (fraction) float32 ``[H, W]``,
    ``labels`` (long), ``lesions`` (uint8), and the slice's geometry.

    Either from a folder written by ``syntheticmri phantom`` (``PhantomSlices(folder)``)
    or generated on the fly (``PhantomSlices(split="train", count=8, seed=0)``).
    Geometry: ``spacing`` (row, column mm) and ``slice_to_ras`` (4x4: (column,
    row, 0, 1) -> RAS mm, Slicer's convention). Subjects are kept in a small LRU
    cache (``cache_subjects``): visit slices subject by subject (:meth:`grouped_order`)
    so each is read or generated once per pass. On the fly, all subjects share one
    fixed field of view, so the length is known in advance; with ``skip_empty``,
    empty slices are replaced by the subject's non-empty slices stretched over
    the same range (from a folder, they are simply left out).
    """

    def __init__(self, folder: Optional[PathLike] = None, *, split: Optional[str] = None, count: int = 1,
                 seed: int = 0, axis: Union[str, int] = "axial", skip_empty: bool = True, resolution: float = 1.0,
                 field: Optional[float] = None, lesions: str = "none", sources: Optional[Sequence[str]] = None,
                 cache_subjects: int = 2) -> None:
        if (folder is None) == (split is None):
            raise InputError("PhantomSlices needs either a folder or a split")
        self.folder = None if folder is None else Path(folder)
        self.axis_name, self.skip_empty, self.resolution = axis, skip_empty, resolution
        self._cache: "OrderedDict[int, Dict[str, Any]]" = OrderedDict()
        self._cache_size = max(1, cache_subjects)
        self._slices: List[Optional[List[int]]] = []
        if self.folder is not None:
            self.records = read_manifest(self.folder)["subjects"]
            self.specs: List[Optional[SubjectSpec]] = [None] * len(self.records)
            self.ids = [record["id"] for record in self.records]
            for n, record in enumerate(self.records):  # labels are small: read them to index the slices
                labels = read_volume(self.folder / record["files"]["labels"])
                self._slices.append(self._nonempty(labels) if skip_empty else list(range(labels.array.shape[_slice_axis(labels, axis)])))
            self.index = [(n, s) for n, slices in enumerate(self._slices) for s in slices]  # type: ignore[union-attr]
        else:
            self.specs = list(plan_split(split, count, seed, field, lesions, sources))  # type: ignore[arg-type]
            self.records = [None] * len(self.specs)  # type: ignore[list-item]
            self.ids = [spec.id for spec in self.specs]  # type: ignore[union-attr]
            shape = [int(math.ceil(f / resolution - 1e-6)) for f in VARIATION.fov_mm][::-1]  # k, j, i
            depth = shape[axis if isinstance(axis, int) else 2 - _AXES[axis]]  # generated grids are LPS-aligned
            self._slices = [None] * len(self.specs)
            self.index = [(n, s) for n in range(len(self.specs)) for s in range(depth)]

    def _nonempty(self, labels: Volume) -> List[int]:
        axis = _slice_axis(labels, self.axis_name)
        other = tuple(a for a in range(3) if a != axis)
        return np.flatnonzero((labels.array > 0).any(axis=other)).tolist()

    def __len__(self) -> int:
        return len(self.index)

    def grouped_order(self, seed: int = 0) -> List[int]:
        """A shuffled order that visits subjects one at a time (slices shuffled within), for a DataLoader sampler."""
        rng = np.random.default_rng(seed)
        by_subject: Dict[int, List[int]] = {}
        for position, (n, _) in enumerate(self.index):
            by_subject.setdefault(n, []).append(position)
        order: List[int] = []
        for n in rng.permutation(sorted(by_subject)):
            order += rng.permutation(by_subject[int(n)]).tolist()
        return order

    def subject(self, n: int) -> Dict[str, Any]:
        """Subject ``n``'s volumes (from the cache, the folder or the generator)."""
        if n in self._cache:
            self._cache.move_to_end(n)
            return self._cache[n]
        if self.folder is not None:
            files = self.records[n]["files"]
            volumes = {name: read_volume(self.folder / path) for name, path in files.items()}
        else:
            subject = generate_subject(self.specs[n], self.resolution)  # type: ignore[arg-type]
            self.records[n] = subject.record
            volumes = {"t1": subject.t1, "t2": subject.t2, "pd": subject.pd, "labels": subject.labels}
            if subject.lesions is not None:
                volumes["lesions"] = subject.lesions
            self._slices[n] = self._nonempty(subject.labels) if self.skip_empty else None
        self._cache[n] = volumes
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return volumes

    def __getitem__(self, position: int) -> Dict[str, Any]:
        n, s = self.index[position]
        volumes = self.subject(n)
        grid = volumes["labels"]
        axis = _slice_axis(grid, self.axis_name)
        if self.folder is None and self._slices[n]:
            depth = grid.array.shape[axis]
            slices = self._slices[n]
            s = slices[min(len(slices) - 1, s * len(slices) // depth)]  # type: ignore[index]
        take = lambda v: np.take(np.asarray(v.array), s, axis=axis)  # noqa: E731
        item = {name: torch.from_numpy(take(volumes[name]).astype(np.float32)) for name in ("t1", "t2", "pd")}
        item["labels"] = torch.from_numpy(take(grid).astype(np.int64))
        item["lesions"] = torch.from_numpy(take(volumes["lesions"]).astype(np.uint8)) if "lesions" in volumes \
            else torch.zeros(item["labels"].shape, dtype=torch.uint8)
        rows, cols = [a for a in range(3) if a != axis]
        ijk = grid.ijk_to_ras()  # columns i, j, k: array axis a is ITK axis 2 - a
        matrix = np.eye(4)
        matrix[:, 0], matrix[:, 1] = ijk[:, 2 - cols], ijk[:, 2 - rows]
        matrix[:3, 3] = ijk[:3, 3] + s * ijk[:3, 2 - axis]
        item["slice_to_ras"] = torch.from_numpy(matrix)
        item["spacing"] = torch.tensor([grid.spacing[2 - rows], grid.spacing[2 - cols]], dtype=torch.float64)
        item["subject"], item["slice"] = self.ids[n], s
        return item
