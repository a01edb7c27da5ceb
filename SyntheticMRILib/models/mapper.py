"""T1/T2/PD maps from routine T1w, T2w and FLAIR series: the network and its inference on volumes.

The network is a 2-D (or 2.5-D: adjacent slices as channels) encoder-decoder of MONAI residual units whose
every level is modulated (FiLM: ``x * (1 + gamma) + beta``) by an MLP of the seven log-scaled TR/TE/TI
values (:func:`~SyntheticMRILib.physics.routine.parameter_vector`), so one set of weights serves any protocol
in the clinical ranges. Each series is first divided by its median over the head (:func:`series_scales`):
a scanner's receiver gain is arbitrary, so the network sees contrast, never absolute intensity. It predicts
log T1, log T2, PD and a head mask; outside the mask every map is 0, as in the project's maps.

:func:`estimate_maps` brings the series (already on one grid) to the model's 1 mm axial grid, runs the
network slice by slice, and resamples the maps back (linear) onto the input grid.
"""
from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..io.grid import model_grid, pad_to, resample
from ..errors import InputError
from ..io.series import head_mask
from ..io.volumes import PathLike, Volume
from ..physics.protocols import Protocol
from ..physics.routine import PARAMETER_NAMES, SERIES, parameter_vector
from ..resources import resource_path

__all__ = ["MapNet", "MAP_SCALE_MS", "series_scales", "network_input", "relaxation_from_outputs", "outputs_to_maps", "predict_maps", "predict_from_vector",
           "on_model_grid", "out_of_memory", "estimate_maps", "save_mapper", "load_network", "load_mapper", "default_mapper_path"]

MAP_SCALE_MS = (1000.0, 100.0)  # the network predicts log(T1 / 1000 ms) and log(T2 / 100 ms): both of order 1


class _FiLM(nn.Module):
    """Scale and shift of every feature channel from the protocol embedding (identity without one)."""

    def __init__(self, channels: int, embedding: int) -> None:
        super().__init__()
        self.to_affine = nn.Linear(embedding, 2 * channels) if embedding else None
        if self.to_affine is not None:
            nn.init.zeros_(self.to_affine.weight)
            nn.init.zeros_(self.to_affine.bias)

    def forward(self, x: torch.Tensor, code: Optional[torch.Tensor]) -> torch.Tensor:
        if self.to_affine is None or code is None:
            return x
        gamma, beta = self.to_affine(code)[..., None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class MapNet(nn.Module):
    """Routine series (and their protocols) in, ``[B, 4, H, W]`` out: log T1/1000, log T2/100, PD logit, head logit.

    Args:
        config: ``channels`` per level (e.g. ``[24, 48, 96, 192]``), ``context`` (slices per series: 1 for 2-D, 3
            for 2.5-D), ``embedding`` (width of the protocol MLP; 0 = no parameter embedding), ``series`` (input
            series, default 3) and ``parameters`` (length of the protocol vector, default 7): re-parameterization's
            physics engine is this network with one series and :func:`~SyntheticMRILib.physics.scans.scan_vector`.

    Examples:
        >>> net = MapNet({"channels": [8, 16], "context": 1, "embedding": 16})
        >>> net(torch.rand(2, 3, 32, 32), torch.zeros(2, 7)).shape
        torch.Size([2, 4, 32, 32])
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution, ResidualUnit

        self.config = dict(config)
        channels = [int(c) for c in self.config["channels"]]
        embedding = int(self.config.get("embedding", 0))
        inputs = int(self.config.get("series", len(SERIES))) * int(self.config.get("context", 1))
        unit = dict(spatial_dims=2, subunits=2, norm="batch", act="prelu")
        self.mlp = nn.Sequential(nn.Linear(int(self.config.get("parameters", len(PARAMETER_NAMES))), embedding), nn.SiLU(), nn.Linear(embedding, embedding),
                                 nn.SiLU()) if embedding else None
        self.down = nn.ModuleList()
        previous = inputs
        for n, c in enumerate(channels):
            self.down.append(ResidualUnit(in_channels=previous, out_channels=c, strides=1 if n == 0 else 2, **unit))
            previous = c
        self.up, self.merge = nn.ModuleList(), nn.ModuleList()
        for c in reversed(channels[:-1]):
            self.up.append(Convolution(2, previous, c, strides=2, kernel_size=3, is_transposed=True, norm="batch",
                                       act="prelu"))
            self.merge.append(ResidualUnit(in_channels=2 * c, out_channels=c, strides=1, **unit))
            previous = c
        self.film_down = nn.ModuleList(_FiLM(c, embedding) for c in channels)
        self.film_up = nn.ModuleList(_FiLM(c, embedding) for c in reversed(channels[:-1]))
        self.head = nn.Conv2d(previous, 4, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.config["channels"]) - 1)

    @property
    def context(self) -> int:
        return int(self.config.get("context", 1))

    def forward(self, images: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        code = self.mlp(parameters) if self.mlp is not None else None
        skips = []
        x = images
        for block, film in zip(self.down, self.film_down):
            x = film(block(x), code)
            skips.append(x)
        for up, merge, film, skip in zip(self.up, self.merge, self.film_up, reversed(skips[:-1])):
            x = film(merge(torch.cat([up(x), skip], dim=1)), code)
        return self.head(x)


def relaxation_from_outputs(out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """T1, T2 (ms; T2 <= T1) and PD from the network's first three channels, everywhere (differentiable: the
    training loss's physics term uses them)."""
    t1 = MAP_SCALE_MS[0] * torch.exp(out[:, 0].clamp(-5, 3))
    t2 = torch.minimum(MAP_SCALE_MS[1] * torch.exp(out[:, 1].clamp(-5, 4)), t1)
    return t1, t2, torch.sigmoid(out[:, 2])


def outputs_to_maps(out: torch.Tensor, threshold: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`relaxation_from_outputs`, 0 outside the predicted head (the fourth channel)."""
    head = torch.sigmoid(out[:, 3]) > threshold
    return tuple(torch.where(head, m, torch.zeros_like(m)) for m in relaxation_from_outputs(out))  # type: ignore[return-value]


# --------------------------------------------------------------------------- normalization


def series_scales(images: np.ndarray) -> np.ndarray:
    """Each series' median over the head (:func:`head_mask`): what the network's inputs are divided by."""
    images = np.asarray(images, dtype=np.float32)
    mask = head_mask(images)
    if mask.sum() < 100:
        raise InputError("the series have almost no signal above their background; nothing to map")
    scales = np.array([np.median(image[mask]) for image in images], np.float32)
    if not np.all(scales > 0):
        raise InputError("a series is zero over most of the head; check the inputs")
    return scales


def network_input(images: torch.Tensor, context: int) -> torch.Tensor:
    """``[S, D, H, W]`` normalized series -> ``[D, S * context, H, W]``: each slice with its neighbours (edges
    repeated), series-major."""
    if context == 1:
        return images.permute(1, 0, 2, 3)
    half = context // 2
    padded = torch.cat([images[:, :1]] * half + [images] + [images[:, -1:]] * half, dim=1)
    depth = images.shape[1]
    stacks = [padded[:, k:k + depth] for k in range(context)]  # each [3, D, H, W]
    return torch.stack(stacks, dim=1).reshape(len(images) * context, depth, *images.shape[2:]).permute(1, 0, 2, 3)


# --------------------------------------------------------------------------- inference


def predict_maps(model: MapNet, images: np.ndarray, protocols: Mapping[str, Protocol], device: torch.device,
                 batch: int = 8, progress: Optional[Callable[[int, int], None]] = None) -> Tuple[np.ndarray, ...]:
    """T1, T2 (ms) and PD ``[D, H, W]`` from the three series ``images`` ``[3, D, H, W]`` on the model grid."""
    return predict_from_vector(model, images, parameter_vector(protocols), device, batch, progress)


@torch.no_grad()
def predict_from_vector(model: MapNet, images: np.ndarray, vector: Sequence[float], device: torch.device,
                        batch: int = 8, progress: Optional[Callable[[int, int], None]] = None) -> Tuple[np.ndarray, ...]:
    """T1, T2 (ms) and PD ``[D, H, W]`` from series ``images`` ``[S, D, H, W]`` (model grid) whose protocols the
    network is told as ``vector``."""
    model = model.to(device).eval()
    scales = series_scales(images)
    normalized = torch.from_numpy(np.asarray(images, np.float32) / scales[:, None, None, None])
    slices = network_input(normalized, model.context)
    parameters = torch.tensor([list(vector)], dtype=torch.float32, device=device)
    depth, (h, w) = slices.shape[0], slices.shape[-2:]
    out = [np.zeros((depth, h, w), np.float32) for _ in range(3)]
    for start in range(0, depth, batch):
        x = pad_to(slices[start:start + batch].to(device), model.size_multiple)
        maps = outputs_to_maps(model(x, parameters.expand(x.shape[0], -1))[..., :h, :w])
        for store, m in zip(out, maps):
            store[start:start + batch] = m.cpu().numpy()
        if progress is not None:
            progress(min(start + batch, depth), depth)
    return tuple(out)


def on_model_grid(images: Sequence[Volume], run: Callable[[np.ndarray], Sequence[np.ndarray]],
                  log: Callable[[str], None] = lambda _: None) -> Tuple[np.ndarray, ...]:
    """``run(arrays)`` on the series (one grid) brought to the model's 1 mm axial grid, its outputs resampled
    (linear) back onto the grid of ``images[0]``; ``run`` gets ``[S, D, H, W]`` float32 and returns ``[D, H, W]``s."""
    grid = images[0]
    reference = model_grid(grid)
    if reference is None:
        return tuple(run(np.stack([np.asarray(v.array, np.float32) for v in images])))
    log(f"resampling from {np.round(grid.spacing, 3).tolist()} mm to the model's 1 mm axial grid and back")
    arrays = np.stack([resample(v.with_array(np.asarray(v.array, np.float32)), reference) for v in images])
    target = grid.with_array(np.zeros(grid.array.shape, np.float32))
    return tuple(resample(reference.with_array(m), target) for m in run(arrays))


def out_of_memory(device: torch.device) -> InputError:
    return InputError(f"out of memory on {device}; try --device cpu")


def estimate_maps(images: Sequence[Volume], protocols: Mapping[str, Protocol], model: Optional[MapNet] = None,
                  device: torch.device = torch.device("cpu"), progress: Optional[Callable[[int, int], None]] = None,
                  log: Callable[[str], None] = lambda _: None,
                  coverage: Optional[np.ndarray] = None) -> Tuple[Volume, Volume, Volume]:
    """T1, T2 (ms) and PD (fraction) on the grid of ``images[0]`` (the T1w) from the three series, which must
    already share that grid (:func:`~SyntheticMRILib.io.series.load_series` resamples them); 0 where
    ``coverage`` (``RoutineSeries.coverage``) says a series has no data."""
    model = model if model is not None else load_mapper(device=device)
    start = time.perf_counter()
    try:
        maps = on_model_grid(images, lambda arrays: predict_maps(model, arrays, protocols, device, progress=progress), log)
    except torch.cuda.OutOfMemoryError:  # torch.OutOfMemoryError is torch >= 2.5 only
        raise out_of_memory(device) from None
    log(f"network {time.perf_counter() - start:.1f} s on {device}")
    if coverage is not None:
        maps = tuple(np.where(coverage, m, 0) for m in maps)
    return tuple(images[0].with_array(np.ascontiguousarray(m, dtype=np.float32)) for m in maps)  # type: ignore[return-value]


# --------------------------------------------------------------------------- files


def default_mapper_path() -> Path:
    return resource_path("Models", "maps", "maps.pt")


def save_mapper(model: MapNet, path: PathLike, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Weights and config in one file that ``torch.load(weights_only=True)`` reads (half precision: the shipped
    file stays small; loading restores float32)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in model.state_dict().items()}
    torch.save({"config": model.config, "state_dict": state, "extra": dict(extra or {})}, path)
    return path


def load_network(path: PathLike, build: Callable[[Mapping[str, Any]], nn.Module], what: str,
                 device: torch.device = torch.device("cpu")) -> nn.Module:
    """A network written by :func:`save_mapper`, rebuilt by ``build(config)``, in eval mode on ``device``;
    ``what`` names it in the one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build(saved["config"])
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in saved["state_dict"].items()})
    except (RuntimeError, KeyError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        raise InputError(f"{path}: not a SyntheticMRI {what} ({type(error).__name__})") from None
    return model.to(device).eval()


def load_mapper(path: Optional[PathLike] = None, device: torch.device = torch.device("cpu")) -> MapNet:
    """A model written by :func:`save_mapper` (default: the shipped one), in eval mode on ``device``."""
    return load_network(path if path is not None else default_mapper_path(), MapNet, "map model", device)  # type: ignore[return-value]
