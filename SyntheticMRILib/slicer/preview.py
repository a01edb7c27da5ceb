"""Live preview: synthesize only the voxels that slice views show.

While a slider moves, the Slicer module recomputes the voxels under its slice
views, not the volume: :func:`plane_voxels` finds, for one view, the band of
voxels the view interpolates from, and :func:`synthesize_planes` gathers those
voxels from the maps, runs them through the physics layer's no-gradient path
(:func:`~SyntheticMRILib.physics.synthesis.synthesize_volume`, eager: the equations of
:func:`~SyntheticMRILib.physics.synthesis.synthesize`) and scatters the result into the
output array in place.
A view aligned with the grid costs one voxel slice; an oblique view a few per
column. :class:`MapCache` keeps the maps of the last inputs on the device, so a
slider move converts nothing. :func:`render_planes` does the same for a re-parameterized scan: the voxels
of the planes go through :meth:`~SyntheticMRILib.models.reparam.ScanMaps.render` (the physics layer and the
carried residual), nothing else.

Nothing here touches MRML: matrices and arrays come in, the bridge
(:mod:`SyntheticMRILib.slicer.bridge`) reads them from nodes.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Callable, Hashable, Iterable, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..devices import pick_device
from ..io.maps import Maps
from ..physics.protocols import Protocol
from ..physics.synthesis import synthesize_volume
from ..io.volumes import Volume

if TYPE_CHECKING:  # annotations only: the model module loads the networks' code
    from ..models.reparam import ScanMaps

__all__ = ["PlaneVoxels", "plane_voxels", "synthesize_planes", "render_planes", "on_grid", "MapCache"]

ArrayLike = Union[np.ndarray, Sequence[Sequence[float]]]
MapArray = Union[np.ndarray, torch.Tensor]

_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- plane geometry
class PlaneVoxels(NamedTuple):
    """The voxels one slice view shows: a band across array axis ``axis``.

    ``indices`` has the volume's shape except along ``axis``, where it has the band's width: the voxels of
    each column along ``axis``, in order, so that ``np.take_along_axis(volume, indices, axis)`` (or
    ``torch.gather(volume, axis, indices)``) reads them and ``np.put_along_axis`` writes them.
    """

    axis: int
    indices: np.ndarray

    @property
    def width(self) -> int:
        """Voxels per column: 1 for a view through voxel centres aligned with the grid."""
        return int(self.indices.shape[self.axis])


def plane_voxels(slice_to_ras: ArrayLike, ras_to_ijk: ArrayLike, shape: Sequence[int]) -> Optional[PlaneVoxels]:
    """The voxels a slice view's plane shows, or None if the plane misses the volume.

    ``slice_to_ras`` is the view's 4x4 SliceToRAS matrix (its third column the plane normal, its
    fourth a point of the plane), ``ras_to_ijk`` the volume's 4x4 world-to-IJK matrix (any affine
    grid: oblique, left-handed, anisotropic) and ``shape`` its array shape, indexed (k, j, i).

    The band runs along the array axis most normal to the plane: for each column of voxels along
    that axis, the indices between which the plane crosses the column, widened by how far the
    crossing moves within one voxel of the column. That holds every voxel a trilinear (or nearest
    neighbour) view interpolates from. A view aligned with the grid through voxel centres gives a
    band of width 1, one voxel slice; Slicer's default views on an oblique acquisition a few voxels.
    """
    slice_to_ras = np.asarray(slice_to_ras, dtype=float)
    ras_to_ijk = np.asarray(ras_to_ijk, dtype=float)
    point = (ras_to_ijk @ slice_to_ras[:, 3])[:3]  # in IJK, as the normal below
    normal = np.linalg.inv(ras_to_ijk[:3, :3]).T @ slice_to_ras[:3, 2]  # normals map with the inverse transpose
    if not normal.any():
        return None
    ijk_axis = int(np.argmax(np.abs(normal)))
    axis = 2 - ijk_axis  # IJK axis a is array axis 2 - a
    rest = [r for r in range(3) if r != axis]  # the array axes of the columns' positions
    slopes = [normal[2 - r] / normal[ijk_axis] for r in rest]
    # Where the plane crosses each column, and how far the crossing moves within one voxel of the column.
    rows = np.arange(shape[rest[0]], dtype=float)[:, np.newaxis] - point[2 - rest[0]]
    columns = np.arange(shape[rest[1]], dtype=float)[np.newaxis, :] - point[2 - rest[1]]
    crossing = point[ijk_axis] - slopes[0] * rows - slopes[1] * columns
    reach = abs(slopes[0]) + abs(slopes[1])
    low = np.floor(crossing - reach + 1e-6)
    high = np.ceil(crossing + reach - 1e-6)
    size = shape[axis]
    if high.max() < 0 or low.min() > size - 1:
        return None
    low = np.clip(low, 0, size - 1).astype(np.int64)
    high = np.clip(high, 0, size - 1).astype(np.int64)
    width = int((high - low).max()) + 1
    indices = np.empty([width if r == axis else shape[r] for r in range(3)], np.int64)
    for step in range(width):  # one 2-D slice of the band at a time: fast whatever the axis
        np.minimum(low + step, high, out=indices[(slice(None),) * axis + (step,)])
    return PlaneVoxels(axis, indices)


def on_grid(world_to_ijk: Optional[ArrayLike], shape: Sequence[int], grid: Volume, tolerance: float = 1e-4) -> bool:
    """Whether an array of ``shape`` whose world-to-IJK matrix is ``world_to_ijk`` lies voxel for voxel on
    ``grid`` (e.g. the maps' grid), so that the same indices address the same places. None is never on it."""
    if world_to_ijk is None or tuple(shape) != tuple(grid.array.shape):
        return False
    return bool(np.allclose(np.linalg.inv(np.asarray(world_to_ijk, float)), grid.ijk_to_ras(), atol=tolerance))


# ----------------------------------------------------------------------------- the preview
def _single_slice(plane: PlaneVoxels) -> Optional[int]:
    """The index when the band is one whole voxel slice (a view aligned with the grid), else None."""
    indices = plane.indices
    if plane.width == 1 and indices.size and (indices == indices.flat[0]).all():
        return int(indices.flat[0])
    return None


def synthesize_planes(
    t1: MapArray,
    t2: MapArray,
    pd: MapArray,
    protocol: Protocol,
    planes: Iterable[Optional[PlaneVoxels]],
    out: np.ndarray,
) -> int:
    """Write into ``out``, in place, the synthetic image of ``protocol`` at the voxels of ``planes``.

    ``t1``, ``t2`` (ms) and ``pd`` (fraction) are arrays or tensors (any device) of ``out``'s shape,
    indexed (k, j, i); ``planes`` come from :func:`plane_voxels` (None entries, views that miss the
    volume, are skipped). Every other voxel of ``out`` is left untouched; the voxels written hold
    what :func:`~SyntheticMRILib.physics.synthesis.synthesize_volume` gives there, through the same equations.
    The voxels of all planes are gathered into one buffer and synthesized in one call. ``out`` is the
    caller's own writeable array (in Slicer the output node's voxels), never one of the maps.
    Returns how many planes were written.
    """
    if not isinstance(out, np.ndarray) or not out.flags.writeable:
        raise TypeError(f"out must be a writeable numpy array, got {type(out).__name__}")
    maps = [torch.as_tensor(m) for m in (t1, t2, pd)]
    maps = [m if m.is_floating_point() else m.float() for m in maps]  # integer maps (ms) compute in float32
    for name, m in zip(("T1", "T2", "PD"), maps):
        if tuple(m.shape) != out.shape:
            raise ValueError(f"{name} map has shape {tuple(m.shape)}, the output {out.shape}")
        if m.device.type == "cpu" and np.may_share_memory(m.detach().numpy(), out):
            raise ValueError("the output array must not be one of the input maps")
    found = [plane for plane in planes if plane is not None]
    if not found:
        return 0
    target = torch.from_numpy(out)  # shares out's memory: the scatter below writes out
    offsets = np.cumsum([0] + [plane.indices.size for plane in found])
    with torch.no_grad():
        # Gather: each map's voxels of every plane, side by side in one buffer per map.
        voxels = [torch.empty(int(offsets[-1]), dtype=m.dtype, device=m.device) for m in maps]
        for plane, start, stop in zip(found, offsets[:-1], offsets[1:]):
            single = _single_slice(plane)
            index = None if single is not None else torch.as_tensor(plane.indices, device=maps[0].device)
            for m, buffer in zip(maps, voxels):
                part = buffer[start:stop].view(plane.indices.shape)
                if single is not None:
                    part.copy_(m.narrow(plane.axis, single, 1))
                else:
                    torch.gather(m, plane.axis, index, out=part)
        # One call for all planes, eager: the same equations as synthesize(), in cache-sized chunks on a CPU
        # (several times faster than one pass over ~10^6 voxels); fused would compile for every band size.
        image = synthesize_volume(*voxels, protocol).to("cpu", target.dtype)
        for plane, start, stop in zip(found, offsets[:-1], offsets[1:]):
            values = image[start:stop].view(plane.indices.shape)
            single = _single_slice(plane)
            if single is not None:
                target.narrow(plane.axis, single, 1).copy_(values)
            else:
                target.scatter_(plane.axis, torch.from_numpy(plane.indices), values)
    return len(found)


def render_planes(scan_maps: "ScanMaps", target: Protocol, planes: Iterable[Optional[PlaneVoxels]],
                  out: np.ndarray) -> int:
    """Write into ``out`` (the caller's writeable array on the scan's grid), in place, the re-parameterized scan at
    ``target`` at the voxels of ``planes`` (None entries skipped); every other voxel is left untouched, and those
    written hold what ``scan_maps.render(target)`` gives there. The voxels of all planes are gathered from the maps
    and the input into one small scan, rendered in one call. Returns how many planes were written."""
    if not isinstance(out, np.ndarray) or not out.flags.writeable:
        raise TypeError(f"out must be a writeable numpy array, got {type(out).__name__}")
    grid = scan_maps.image
    if out.shape != grid.array.shape:
        raise ValueError(f"the scan has shape {grid.array.shape}, the output {out.shape}")
    if any(np.may_share_memory(array, out) for array in (grid.array, *scan_maps.maps)):
        raise ValueError("the output array must not be the scan or one of its maps")
    found = [plane for plane in planes if plane is not None]
    if not found:
        return 0

    def gathered(array: np.ndarray) -> np.ndarray:  # the planes' voxels side by side, as a 1 x 1 x N volume
        parts = [np.take_along_axis(array, plane.indices, plane.axis).ravel() for plane in found]
        return np.concatenate(parts)[np.newaxis, np.newaxis]

    voxels = dataclasses.replace(scan_maps, image=dataclasses.replace(grid, array=gathered(grid.array)),
                                 maps=tuple(gathered(m) for m in scan_maps.maps))
    values = voxels.render(target).ravel()
    start = 0
    for plane in found:
        stop = start + plane.indices.size
        np.put_along_axis(out, plane.indices, values[start:stop].reshape(plane.indices.shape).astype(out.dtype, copy=False),
                          plane.axis)
        start = stop
    return len(found)


class MapCache:
    """The checked maps of the last inputs, with their tensors on the device, kept until the inputs change.

    A slider move must not convert three volumes again. ``key`` says what the inputs are (in Slicer:
    node IDs and modification times from ``slicer_bridge.node_stamps``, and the units); a new key, or
    another device, loads afresh.
    """

    def __init__(self) -> None:
        self.key: Optional[Hashable] = None
        self.maps: Optional[Maps] = None
        self.tensors: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self.loads = 0  # how many times the maps were loaded

    def clear(self) -> None:
        self.key = self.maps = self.tensors = None

    def get(
        self, key: Hashable, load: Callable[[], Maps], device: str = "auto"
    ) -> Tuple[Maps, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The maps and their (T1, T2, PD) tensors; ``load()`` runs only when ``(key, device)`` is new."""
        if (key, device) != self.key:
            self.clear()  # free the old tensors first: two sets may not fit a GPU
            maps = load()
            for note in maps.notes:
                _log.info("SyntheticMRI: %s", note)
            self.tensors = maps.tensors(pick_device(device))
            self.maps, self.key = maps, (key, device)
            self.loads += 1
        return self.maps, self.tensors
