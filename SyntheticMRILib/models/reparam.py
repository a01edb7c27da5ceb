"""Re-parameterization: one weighted scan -> the same anatomy at another TR/TE/TI. Two engines, one entry point.

* ``physics``: a :class:`~SyntheticMRILib.models.mapper.MapNet` with one input series (2.5-D, FiLM on the scan's
  :func:`~SyntheticMRILib.physics.scans.scan_vector`) predicts T1/T2/PD; the physics layer synthesizes any target
  it knows (every sequence and preset). The output keeps the input's scale: the gain is the least-squares fit
  of the re-synthesized input to the input over the head; and what the maps do not explain (the residual
  input - gain x S_input: texture, fine detail, noise) is carried over scaled by (S_target + f) / (S_input + f)
  (S_target / (S_input + f) for a signed PSIR; none for a dSIR, a ratio of two images),
  f a tenth of the input's median signal, capped at 1 in magnitude (the residual is mostly noise, which an
  acquisition does not amplify where the target is brighter: uncapped, it doubled the error on distant targets),
  so the input protocol gives back the input itself, voxel for voxel (:meth:`ScanMaps.render`).
* ``direct``: the published architecture (:class:`DirectNet`: an encoder and a coarse-to-fine "param net" with
  the parameters as constant channels, tanh output), extended with TI and the sequence (SE or IR targets
  only), in its two modes: ``default`` (the input is always at SE TR 4500 / TE 50) and ``param`` (input and
  target parameters both given). The shipped ``direct`` model is the ``param`` one: it takes any input.

Both divide the input by its median over the head (:func:`~SyntheticMRILib.models.mapper.series_scales`) and
run on the model's 1 mm axial grid; outputs come back on the input's grid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..io.grid import pad_to
from ..io.series import head_mask
from ..io.volumes import PathLike, Volume, read_volume, write_atomic, write_volume
from ..physics.protocols import Protocol
from ..physics.scans import DEFAULT_INPUT, SCAN_SEQUENCES, SCAN_VECTOR_LENGTH, check_scan, scan_vector
from ..physics.synthesis import synthesize
from ..resources import resource_path
from .mapper import MapNet, load_network, on_model_grid, out_of_memory, predict_from_vector, series_scales

__all__ = ["ENGINES", "DEFAULT_ENGINE", "SCAN_RECORD", "DirectNet", "physics_network", "ScanMaps", "predict_scan_maps",
           "direct_inputs", "check_direct_target", "predict_direct", "reparameterize", "default_reparam_path", "load_reparam"]

ENGINES = ("physics", "direct")
DEFAULT_ENGINE = "physics"  # wins the model card's table (every split and mode but out-of-range SE from the default input)
SCAN_RECORD = "scan.json"  # beside the maps ScanMaps.save writes
_DETAIL_FLOOR = 0.1  # f of the residual's scale, as a share of S_input's median over the head


def physics_network(channels=(16, 32, 64, 128), embedding: int = 64, context: int = 3) -> MapNet:
    """The physics engine's network: a MapNet reading one series and the 4-value scan vector."""
    return MapNet({"channels": list(channels), "context": context, "embedding": embedding, "series": 1,
                   "parameters": SCAN_VECTOR_LENGTH, "engine": "physics"})


class DirectNet(nn.Module):
    """The published re-parameterization network: input image (and parameters) in, target image out.

    Encoder: a stride-2 4x4 convolution per level (instance norm but at the first, LeakyReLU 0.2). Param net, from
    the bottom: a transposed convolution, concatenation with the encoder's features, a convolution,
    concatenation with the parameters broadcast as constant channels, two convolutions (instance norm,
    LeakyReLU 0.2); a last transposed convolution and a 1x1 convolution to a tanh, mapped to
    ``[0, range]`` in units of the input's median over the head.

    Args:
        config: ``channels`` per level, ``mode`` (``default``: the target's 4 parameters; ``param``: the input's
            and the target's, 8), ``range`` (output ceiling, input medians).

    Examples:
        >>> net = DirectNet({"channels": [8, 16, 32], "mode": "param", "range": 10.0})
        >>> net(torch.rand(2, 1, 32, 32), torch.zeros(2, 8)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = {**dict(config), "engine": "direct"}
        channels = [int(c) for c in self.config["channels"]]
        if self.config["mode"] not in ("default", "param"):
            raise ValueError(f"mode {self.config['mode']!r}")
        params = SCAN_VECTOR_LENGTH * (2 if self.config["mode"] == "param" else 1)

        def act() -> nn.Module:
            return nn.LeakyReLU(0.2)

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), act())

        self.encoder = nn.ModuleList()
        previous = 1
        for n, c in enumerate(channels):
            norm = nn.InstanceNorm2d(c, affine=True) if n else nn.Identity()
            self.encoder.append(nn.Sequential(nn.Conv2d(previous, c, 4, stride=2, padding=1), norm, act()))
            previous = c
        self.up, self.merge, self.refine = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for c in reversed(channels[:-1]):
            self.up.append(nn.Sequential(nn.ConvTranspose2d(previous, c, 4, stride=2, padding=1),
                                         nn.InstanceNorm2d(c, affine=True), act()))
            self.merge.append(conv(2 * c, c))
            self.refine.append(nn.Sequential(conv(c + params, c), conv(c, c)))
            previous = c
        self.last = nn.Sequential(nn.ConvTranspose2d(previous, previous, 4, stride=2, padding=1), act(),
                                  nn.Conv2d(previous, 1, 1))

    @property
    def size_multiple(self) -> int:
        return 2 ** len(self.config["channels"])

    @property
    def mode(self) -> str:
        return self.config["mode"]

    def forward(self, image: torch.Tensor, parameters: torch.Tensor) -> torch.Tensor:
        skips = []
        x = image
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        for up, merge, refine, skip in zip(self.up, self.merge, self.refine, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
            constant = parameters[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = refine(torch.cat([x, constant], dim=1))
        return (torch.tanh(self.last(x)) + 1) * (0.5 * float(self.config["range"]))


def direct_inputs(protocol: Protocol, target: Protocol, mode: str) -> list:
    """The parameter vector a :class:`DirectNet` of ``mode`` is told."""
    return scan_vector(target) if mode == "default" else scan_vector(protocol) + scan_vector(target)


# --------------------------------------------------------------------------- physics engine


@dataclass
class ScanMaps:
    """What the physics engine predicted once for a scan; :meth:`render` then makes any target (fast).

    ``maps``: T1, T2 (ms) and PD on the scan's grid; ``gain``: the least-squares scale of the re-synthesized input
    to the input over the head; ``image``/``protocol``: the input."""

    image: Volume
    protocol: Protocol
    maps: Tuple[np.ndarray, np.ndarray, np.ndarray]
    gain: float
    floor: float  # f of the residual's scale (S_target + f) / (S_input + f): a share of S_input's head median

    def render(self, target: Protocol, region: Tuple[Any, ...] = (), detail: bool = True) -> np.ndarray:
        """The scan at ``target`` (float32, the input's scale), over ``region`` of the grid (all by default: a
        slab or one slice for a live preview). ``detail=False``: the maps' image alone, no carried residual."""
        t1, t2, pd = (torch.from_numpy(np.ascontiguousarray(m[region])) for m in self.maps)
        s_target = synthesize(t1, t2, pd, target)
        out = self.gain * s_target
        signed = target.sequence in ("psir", "dsir")
        if detail and target.sequence != "dsir":  # a dSIR is a ratio of two IRs: the input's residual has no scale in it
            s_input = synthesize(t1, t2, pd, self.protocol)
            residual = torch.from_numpy(np.ascontiguousarray(self.image.array[region])) - self.gain * s_input
            # (S_t + f) / (S_i + f): exactly 1 at the input protocol, everywhere; bounded where the input is dark;
            # never above 1 in magnitude (the residual is mostly noise: attenuated with the signal, never amplified);
            # a PSIR target keeps its sign (no f above: S_t / (S_i + f)), so the residual follows it through its null
            scale = ((s_target + (0.0 if signed else self.floor)) / (s_input + self.floor)).clamp(-1.0, 1.0)
            out = out + residual * scale
        if not signed:  # magnitude images
            out = out.clamp(min=0)
        return out.numpy().astype(np.float32)

    def save(self, folder: PathLike, overwrite: bool = False) -> Path:
        """``folder``/t1.nrrd, t2.nrrd (ms), pd.nrrd and ``scan.json`` (the input's protocol, gain, floor): what
        :meth:`load` needs besides the input image (a GUI keeps it; the maps are worth a look too)."""
        folder = Path(folder)
        for name, array in zip(("t1", "t2", "pd"), self.maps):
            write_volume(self.image.with_array(array), folder / f"{name}.nrrd", overwrite=overwrite)
        record = {"sequence": self.protocol.sequence, **self.protocol.values(), "gain": self.gain, "floor": self.floor}
        write_atomic(folder / SCAN_RECORD, json.dumps(record, indent=1))
        return folder

    @classmethod
    def load(cls, folder: PathLike, image: Volume) -> "ScanMaps":
        """The maps :meth:`save` wrote, with the input ``image`` (which must be on their grid)."""
        folder = Path(folder)
        try:
            record = json.loads((folder / SCAN_RECORD).read_text())
            protocol = Protocol(record["sequence"], *(record.get(k) for k in ("tr", "te", "ti", "ti2", "flip")))
            maps = tuple(read_volume(folder / f"{name}.nrrd") for name in ("t1", "t2", "pd"))
            gain, floor = float(record["gain"]), float(record["floor"])
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{folder}: not the maps of a re-parameterized scan ({type(error).__name__})") from None
        if not all(m.same_grid(image) for m in maps):
            raise InputError(f"{folder}: the maps are not on the scan's grid")
        return cls(image.with_array(np.clip(np.asarray(image.array, np.float32), 0, None)), protocol,  # magnitude, as load_scan
                   tuple(np.asarray(m.array, np.float32) for m in maps), gain, floor)  # type: ignore[arg-type]


def predict_scan_maps(image: Volume, protocol: Protocol, model: Optional[MapNet] = None,
                      device: torch.device = torch.device("cpu"), progress: Optional[Callable[[int, int], None]] = None,
                      log: Callable[[str], None] = lambda _: None) -> ScanMaps:
    """The physics engine's maps of a scan (``image`` at ``protocol``), its gain and residual floor."""
    check_scan(protocol, "the input scan")
    model = model if model is not None else load_reparam("physics", device=device)
    try:
        maps = on_model_grid([image], lambda arrays: predict_from_vector(model, arrays, scan_vector(protocol), device,
                                                                         progress=progress), log)
    except torch.cuda.OutOfMemoryError:
        raise out_of_memory(device) from None
    maps = tuple(np.ascontiguousarray(m, dtype=np.float32) for m in maps)
    x = np.asarray(image.array, np.float32)
    s = synthesize(*(torch.from_numpy(m) for m in maps), protocol).numpy()
    head = head_mask(x[None]) & (maps[2] > 0)
    if head.sum() < 100:
        raise InputError("the scan has almost no signal the network reads as head; nothing to re-parameterize")
    gain = float((x[head] * s[head]).sum() / max(float((s[head] ** 2).sum()), 1e-12))
    return ScanMaps(image.with_array(x), protocol, maps, gain, _DETAIL_FLOOR * float(np.median(s[head])))


# --------------------------------------------------------------------------- direct engine


def check_direct_target(target: Protocol) -> Protocol:
    """``target`` if the direct engine can make it (SE or IR), else a one-line error."""
    if target.sequence not in SCAN_SEQUENCES:
        raise InputError(f"the direct engine makes SE and IR targets only ({target.sequence.upper()} asked); the physics "
                         "engine makes any")
    return check_scan(target, "the target")


@torch.no_grad()
def predict_direct(model: DirectNet, image: Volume, protocol: Protocol, target: Protocol,
                   device: torch.device = torch.device("cpu"), batch: int = 8,
                   progress: Optional[Callable[[int, int], None]] = None,
                   log: Callable[[str], None] = lambda _: None) -> np.ndarray:
    """The direct engine's image at ``target`` on the input's grid, in the input's scale."""
    check_scan(protocol, "the input scan")
    check_direct_target(target)
    if model.mode == "default" and protocol != DEFAULT_INPUT:
        raise InputError(f"this direct model reads inputs at {DEFAULT_INPUT.caption()} only; use a param-to-param model")
    model = model.to(device).eval()
    vector = torch.tensor([direct_inputs(protocol, target, model.mode)], dtype=torch.float32, device=device)

    def run(arrays: np.ndarray):
        scale = float(series_scales(arrays)[0])
        slices = torch.from_numpy(arrays[0] / scale)[:, None]
        depth, (h, w) = slices.shape[0], slices.shape[-2:]
        out = np.zeros((depth, h, w), np.float32)
        for start in range(0, depth, batch):
            x = pad_to(slices[start:start + batch].to(device), model.size_multiple)
            out[start:start + batch] = model(x, vector.expand(x.shape[0], -1))[:, 0, :h, :w].cpu().numpy() * scale
            if progress is not None:
                progress(min(start + batch, depth), depth)
        return (out,)

    try:
        return np.clip(on_model_grid([image], run, log)[0], 0, None).astype(np.float32)
    except torch.cuda.OutOfMemoryError:
        raise out_of_memory(device) from None


# --------------------------------------------------------------------------- one entry point, files


def reparameterize(image: Volume, protocol: Protocol, target: Protocol, engine: str = DEFAULT_ENGINE,
                   model: Optional[nn.Module] = None, device: torch.device = torch.device("cpu"),
                   progress: Optional[Callable[[int, int], None]] = None,
                   log: Callable[[str], None] = lambda _: None, keep_maps: Optional[PathLike] = None,
                   overwrite: bool = False) -> Volume:
    """``image`` (acquired at ``protocol``) as ``target`` would show it, on its grid and in its scale;
    ``keep_maps``: a folder for the physics engine's maps (:meth:`ScanMaps.save`)."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose {' or '.join(ENGINES)}")
    target = target.validate()
    model = model if model is not None else load_reparam(engine, device=device)
    if keep_maps is not None and engine != "physics":
        raise InputError("only the physics engine has maps to keep")
    if engine == "physics":
        maps = predict_scan_maps(image, protocol, model, device, progress, log)
        if keep_maps is not None:
            maps.save(keep_maps, overwrite)
        array = maps.render(target)
    else:
        array = predict_direct(model, image, protocol, target, device, progress=progress, log=log)
    return image.with_array(array)


def default_reparam_path(engine: str) -> Path:
    return resource_path("Models", "reparam", f"{engine}.pt")


def _build(config: Mapping[str, Any]) -> nn.Module:
    return DirectNet(config) if config.get("engine") == "direct" else MapNet(config)


def load_reparam(engine: str, path: Optional[PathLike] = None, device: torch.device = torch.device("cpu")) -> nn.Module:
    """A re-parameterization model of ``engine`` (default: the shipped one), in eval mode on ``device``."""
    path = path if path is not None else default_reparam_path(engine)
    model = load_network(path, _build, f"{engine} re-parameterization model", device)
    found = model.config.get("engine", "maps")
    if found != engine:
        raise InputError(f"{path}: a {found} model, not a {engine} re-parameterization model")
    return model
