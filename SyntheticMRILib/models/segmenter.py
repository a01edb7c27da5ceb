"""Subcortical segmentation from T1/T2/PD maps: the model (learnable contrasts + a MONAI 2-D U-Net) and inference.

The model segments axial slices of a 1 mm grid whose axes follow LPS (the grid it was
trained on). :func:`segment` brings any input there and back: maps on another spacing or
orientation are resampled (linear) to 1 mm, axis-aligned, and the label map is resampled
(nearest neighbour) back onto the input's exact grid. Each structure keeps its largest
connected component (a subcortical structure is one piece; stray voxels elsewhere are
errors). Labels use FreeSurfer numbering, as the phantoms do.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from .contrast import LearnableContrast
from ..io.grid import model_grid, pad_to, resample
from ..errors import InputError
from ..io.maps import TISSUE_PD, Maps, relaxation_problem, tissue_mask
from ..io.labels import STRUCTURES
from ..resources import resource_path
from ..io.volumes import PathLike, Volume

__all__ = [
    "LABELS", "CLASS_NAMES", "SegmentationModel", "load_model", "save_model", "default_model_path",
    "check_brain_maps", "segment", "predict_classes", "volume_scale", "SCALE_STRIDE", "structure_box", "SEARCH_STRIDE",
    "BOX_MARGIN",
    "keep_largest_components", "label_volumes_ml", "label_dice", "structure_dice",
]

LABELS: Tuple[int, ...] = (0,) + tuple(STRUCTURES.values())
"""FreeSurfer label of each output class (class 0 is background)."""
CLASS_NAMES: Tuple[str, ...] = ("background",) + tuple(STRUCTURES)
_MAP_SCALE = (1000.0, 100.0, 1.0)  # raw-map input: T1/1000 ms, T2/100 ms, PD: all of order 1


class SegmentationModel(nn.Module):
    """Maps in, 15 class logits out. ``inputs``: ``"contrasts"`` (a :class:`LearnableContrast`, trainable or
    frozen) or ``"maps"`` (the scaled T1/T2/PD maps themselves, no physics).

    ``config`` holds everything needed to rebuild it (:func:`load_model`): ``inputs``,
    ``sequences`` and the U-Net's ``channels`` and ``num_res_units``.
    """

    def __init__(self, config: Mapping[str, Any], contrast: Optional[LearnableContrast] = None) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.config = dict(config)
        if self.config["inputs"] == "contrasts":
            self.contrast = contrast if contrast is not None else LearnableContrast(self.config["sequences"])
            channels_in = len(self.contrast.sequences)
        elif self.config["inputs"] == "maps":
            self.contrast = None
            channels_in = 3
        else:
            raise InputError(f"unknown model inputs {self.config['inputs']!r}")
        channels = tuple(self.config["channels"])
        self.unet = UNet(spatial_dims=2, in_channels=channels_in, out_channels=len(LABELS), channels=channels,
                         strides=(2,) * (len(channels) - 1), num_res_units=int(self.config["num_res_units"]))

    @property
    def size_multiple(self) -> int:
        """Slice height and width must be multiples of this (one halving per U-Net level)."""
        return 2 ** (len(self.config["channels"]) - 1)

    def _raw(self, t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor) -> torch.Tensor:
        if self.contrast is None:
            return torch.stack([m / s for m, s in zip((t1, t2, pd), _MAP_SCALE)], dim=1)
        return self.contrast(t1, t2, pd)

    def scale(self, t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The one normalization of training and inference: each input channel's weighted mean magnitude ``[B, C]``
        over the head voxels of a whole volume, given as ``[B, N]`` maps and ``weights`` (voxel counts: 1 per voxel at
        inference; in training, the voxel count of each tissue, whose values are the N entries). Voxels with PD 0 are
        not head."""
        weights = weights.to(t1.dtype) * (pd > 0).to(t1.dtype)
        raw = self._raw(t1, t2, pd).abs()  # [B, C, N]
        return (raw * weights[:, None]).sum(-1) / weights.sum(-1, keepdim=True).clamp(min=1e-12)

    def images(self, t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, scale: torch.Tensor,
               scanner: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """The U-Net's input ``[B, C, H, W]`` from maps ``[B, H, W]``, divided by ``scale`` ``[B, C]`` (:meth:`scale` of
        their volume). ``scanner`` adds acquisition effects (training augmentation, an experiment's noise) before the
        normalization, as a real scan would have them."""
        x = self._raw(t1, t2, pd)
        if scanner is not None:
            x = scanner(x)
        return x / (scale[..., None, None] + 1e-6)

    def forward(self, t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor, scale: torch.Tensor,
                scanner: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        return self.unet(self.images(t1, t2, pd, scale, scanner))


# --------------------------------------------------------------------------- files


def default_model_path() -> Path:
    return resource_path("Models", "subcortical.pt")


def save_model(model: SegmentationModel, path: PathLike, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Weights and config in one file that ``torch.load(weights_only=True)`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "state_dict": state, "extra": dict(extra or {})}, path)
    return path


def load_model(path: Optional[PathLike] = None, device: torch.device = torch.device("cpu")) -> SegmentationModel:
    """A model written by :func:`save_model` (default: the shipped one), in eval mode on ``device``."""
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        old = saved["config"].get("normalization") != "volume"
        model = None if old else SegmentationModel(saved["config"])
        if model is not None:
            model.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError, EOFError, ValueError, AttributeError) as error:
        raise InputError(f"{path}: not a SyntheticMRI segmentation model ({type(error).__name__})") from None
    if model is None:
        raise InputError(f"{path}: trained before the per-volume normalization (each slice normalized on its own); "
                         "retrain it with syntheticmri train-seg")
    return model.to(device).eval()


# --------------------------------------------------------------------------- input checks and the model grid

_MIN_EXTENT_MM = (110.0, 130.0, 90.0)  # L-R, A-P, S-I extent of a whole adult brain is ~140, 170, 120 mm
# Median T1 and T2 (ms) over the tissue of a whole head with its brain, at the fields the model knows: narrower
# than any tissue's (io.maps), so that, say, a head full of fluid (T2 ~2 s) is not taken for a brain.
_BRAIN_T1_MEDIAN_MS = (300.0, 4000.0)
_BRAIN_T2_MEDIAN_MS = (20.0, 1000.0)


def check_brain_maps(maps: Maps) -> None:
    """Refuse maps that cannot be a whole brain: values not those of brain tissue (the plausibility rule of
    :func:`~SyntheticMRILib.io.maps.relaxation_problem`, with a brain's medians), or a field of view too small."""
    foreground = tissue_mask(maps.t1, maps.pd)
    if foreground.sum() < 1000:
        raise InputError(f"PD map has almost no tissue (fewer than 1000 voxels above {TISSUE_PD:g})")
    problem = relaxation_problem(maps.t1, maps.t2, maps.pd, _BRAIN_T1_MEDIAN_MS, _BRAIN_T2_MEDIAN_MS)
    if problem is not None:
        raise InputError(f"{problem}: not those of brain tissue; segment needs whole-brain T1/T2/PD maps "
                         "(T1 and T2 in ms)")
    ijk = np.argwhere(foreground)[:, ::-1]  # (i, j, k)
    corners = np.stack([ijk.min(0), ijk.max(0)]).astype(float)
    matrix = np.asarray(maps.grid.direction).reshape(3, 3) * np.asarray(maps.grid.spacing)
    points = np.array([[corners[a, 0], corners[b, 1], corners[c, 2]] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    extent = np.ptp(points @ matrix.T, axis=0)
    if np.any(extent < _MIN_EXTENT_MM):
        raise InputError(f"the maps cover {extent[0]:.0f} x {extent[1]:.0f} x {extent[2]:.0f} mm (L-R x A-P x S-I); "
                         "segment needs whole-brain maps (at least "
                         f"{_MIN_EXTENT_MM[0]:.0f} x {_MIN_EXTENT_MM[1]:.0f} x {_MIN_EXTENT_MM[2]:.0f} mm)")


# --------------------------------------------------------------------------- inference


# The box that holds the structures (chosen on `val`, 6 subjects, among strides 4/6/8 and margins 16/24/32 voxels):
# every 6th axial slice is enough to find them (the shortest, the accumbens, spans about 10 slices), and the margin
# covers what lies between searched slices. The network also scored better on the box than on whole slices: its
# instance normalization was trained on 96-pixel crops around the structures, which the box resembles.
SEARCH_STRIDE = 6
BOX_MARGIN = (SEARCH_STRIDE + 4, 16, 16)  # voxels (k, j, i) around what the search found


def _classes(model: SegmentationModel, images: torch.Tensor) -> np.ndarray:
    """Class indices ``[B, H, W]`` of U-Net inputs ``[B, C, H, W]`` (zero-padded to the U-Net's multiple)."""
    h, w = images.shape[-2:]
    logits = model.unet(pad_to(images, model.size_multiple))[..., :h, :w]
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def structure_box(model: SegmentationModel, maps: Sequence[torch.Tensor], scale: torch.Tensor,
                  device: torch.device, batch: int = 16, scanner: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                  progress: Optional[Callable[[int], None]] = None) -> Optional[Tuple[slice, slice, slice]]:
    """Where the structures are in ``maps`` (T1, T2, PD ``[k, j, i]`` tensors of a head box): the network run on every
    :data:`SEARCH_STRIDE`-th slice, each structure's largest piece across them grown by :data:`BOX_MARGIN`; None
    when it labels nothing.
    ``progress(slices)`` after each batch."""
    searched = np.arange(0, maps[0].shape[0], SEARCH_STRIDE)
    stack = []
    for start in range(0, len(searched), batch):
        ks = searched[start:start + batch].tolist()
        stack.append(_classes(model, model.images(*[m[ks].to(device) for m in maps], scale, scanner)))
        if progress is not None:
            progress(len(ks))
    # The searched slices stacked: a structure is one piece across them, a stray voxel far away is not.
    found = np.argwhere(keep_largest_components(np.concatenate(stack)) > 0)
    if found.size == 0:
        return None
    found[:, 0] = searched[found[:, 0]]
    low, high = found.min(0) - BOX_MARGIN, found.max(0) + 1 + np.asarray(BOX_MARGIN)
    box = [slice(int(max(low[0], 0)), int(min(high[0], maps[0].shape[0])))]
    for axis in (1, 2):  # in-plane: centred on what was found, a size the U-Net takes whole, the same for a mirror
        n, multiple = maps[0].shape[axis], model.size_multiple
        size = min(-(-(high[axis] - low[axis]) // multiple) * multiple, n)
        start = min(max((low[axis] + high[axis] - size) // 2, 0), n - size)
        box.append(slice(int(start), int(start + size)))
    return tuple(box)


SCALE_STRIDE = 8  # every 8th head voxel gives the head means to 0.1 % (measured on the sample), 8x faster


def volume_scale(model: SegmentationModel, t1: torch.Tensor, t2: torch.Tensor, pd: torch.Tensor,
                 device: torch.device = torch.device("cpu"), stride: int = SCALE_STRIDE) -> torch.Tensor:
    """:meth:`SegmentationModel.scale` of a whole volume's maps ``[k, j, i]`` over every ``stride``-th head voxel (in
    memory order; each counts once), ``[1, C]`` on ``device``."""
    head = pd > 0
    voxels = [m[head][::stride].to(device)[None] for m in (t1, t2, pd)]
    return model.scale(*voxels, torch.ones_like(voxels[0]))


@torch.no_grad()
def predict_classes(model: SegmentationModel, t1: np.ndarray, t2: np.ndarray, pd: np.ndarray,
                    device: torch.device = torch.device("cpu"), batch: int = 16,
                    progress: Optional[Callable[[int, int], None]] = None, search: bool = True,
                    scanner: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> np.ndarray:
    """Class indices ``[k, j, i]`` (uint8) of maps already on the model's grid, axial slice by slice.

    The network sees the bounding box of the head (PD > 0), and with ``search`` only the box that holds the
    structures (:func:`structure_box`; the whole head box when the search finds nothing). Each slice's contrasts
    are divided by their head means over the whole volume (:func:`volume_scale`), as in training, so a voxel's input
    does not depend on the box. ``scanner`` adds acquisition effects to the synthesized contrasts (an experiment's
    noisy acquisition). ``progress(done, total)`` is called after each batch of slices.
    """
    model.eval()
    out = np.zeros(t1.shape, np.uint8)
    head = np.argwhere(pd > 0)
    if head.size == 0:
        return out
    (k0, j0, i0), (k1, j1, i1) = head.min(0), head.max(0) + 1
    maps = [torch.from_numpy(np.ascontiguousarray(m[k0:k1, j0:j1, i0:i1], dtype=np.float32)) for m in (t1, t2, pd)]
    searched = len(range(0, k1 - k0, SEARCH_STRIDE)) if search else 0
    done, total = 0, searched + (k1 - k0)

    def step(slices: int) -> None:
        nonlocal done
        done += slices
        if progress is not None:
            progress(done, total)

    scale = volume_scale(model, *maps, device=device)
    box = structure_box(model, maps, scale, device, batch, scanner, step) if search else None
    ks, js, is_ = box or (slice(0, k1 - k0), slice(0, j1 - j0), slice(0, i1 - i0))
    total = done + ks.stop - ks.start
    for start in range(ks.start, ks.stop, batch):
        stop = min(start + batch, ks.stop)
        images = model.images(*[m[start:stop].to(device) for m in maps], scale, scanner)[..., js, is_]
        out[k0 + start:k0 + stop, j0 + js.start:j0 + js.stop, i0 + is_.start:i0 + is_.stop] = _classes(model, images)
        step(stop - start)
    return out


def keep_largest_components(classes: np.ndarray) -> np.ndarray:
    """Each non-zero class reduced to its largest 26-connected component (the rest becomes background)."""
    out = classes.copy()
    image = sitk.GetImageFromArray(classes)
    for c in np.unique(classes):
        if c == 0:
            continue
        components = sitk.RelabelComponent(sitk.ConnectedComponent(image == int(c), True), sortByObjectSize=True)
        out[(classes == c) & (sitk.GetArrayViewFromImage(components) != 1)] = 0
    return out


def segment(maps: Maps, model: Optional[SegmentationModel] = None, device: torch.device = torch.device("cpu"),
            progress: Optional[Callable[[int, int], None]] = None, log: Callable[[str], None] = lambda _: None,
            search: bool = True) -> Volume:
    """FreeSurfer-numbered labels (uint16) of the 14 subcortical structures on the exact grid of ``maps``;
    ``search``: the network sees only the box that holds the structures (see :func:`predict_classes`)."""
    check_brain_maps(maps)
    model = model if model is not None else load_model(device=device)
    model = model.to(device)
    reference = model_grid(maps.grid)
    if reference is None:
        arrays = (maps.t1, maps.t2, maps.pd)
    else:
        log(f"resampling the maps from {np.round(maps.grid.spacing, 3).tolist()} mm to the model's 1 mm axial grid and back")
        arrays = tuple(resample(maps.grid.with_array(m), reference, sitk.sitkLinear) for m in (maps.t1, maps.t2, maps.pd))
    start = time.perf_counter()
    try:
        classes = predict_classes(model, *arrays, device=device, progress=progress, search=search)
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError is torch >= 2.5 only
        raise InputError(f"out of memory on {device}; try --device cpu") from None
    classes = keep_largest_components(classes)
    log(f"network {time.perf_counter() - start:.1f} s on {device}")
    labels = np.asarray(LABELS, np.uint16)[classes]
    if reference is not None:
        labels = resample(reference.with_array(labels), maps.grid.with_array(np.zeros(maps.t1.shape, np.uint16)),
                           sitk.sitkNearestNeighbor)
    return maps.grid.with_array(labels.astype(np.uint16))


def label_dice(predicted: np.ndarray, truth: np.ndarray, labels: Iterable[int]) -> np.ndarray:
    """Dice of each of ``labels`` between two label maps on one grid: the one Dice of the package.

    A label found in neither map scores 1; one missed (or only predicted) scores 0.
    """
    scores = []
    for label in labels:
        a, b = predicted == label, truth == label
        total = int(a.sum()) + int(b.sum())
        scores.append(2.0 * int((a & b).sum()) / total if total else 1.0)
    return np.array(scores, dtype=np.float64)


def structure_dice(predicted: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Dice of each of the 14 structures between two FreeSurfer-numbered label maps on one grid."""
    return dict(zip(STRUCTURES, label_dice(predicted, truth, STRUCTURES.values()).tolist()))


def label_volumes_ml(labels: Volume) -> Dict[str, float]:
    """Volume (ml) of each of the 14 structures in a FreeSurfer-numbered label map."""
    counts = np.bincount(np.asarray(labels.array, np.int64).ravel(), minlength=max(LABELS) + 1)
    ml = float(np.prod(labels.spacing)) / 1000.0
    return {name: float(counts[label]) * ml for name, label in STRUCTURES.items()}
