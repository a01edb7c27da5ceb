"""Training both re-parameterization engines: pairs from the phantom generator, losses, ``train-reparam``.

``syntheticmri train-reparam --data DIR -o OUT --engine physics|direct|both`` trains, on the same draws, steps
and batch, the physics engine (``OUT/physics.pt``) and/or the direct engine in its two modes
(``OUT/direct-default.pt``, ``OUT/direct-param.pt``; ``OUT/direct.pt`` is the param one, which takes any input),
then evaluates every engine in ``OUT`` (:mod:`.reparam_eval`) and writes ``report.json``, ``MODEL_CARD.md``,
``loss.png`` and ``examples.png``. A cut-off run resumes from its checkpoints; an engine already in a finished
report is refused unless ``--overwrite``.

A pair (:class:`PairBank`): a training subject's maps with randomized tissue values
(:class:`~SyntheticMRILib.training.routine.RandomTissueValues`), an input protocol (log-uniform in the
clinical ranges of :mod:`~SyntheticMRILib.physics.scans`, SE or IR; the direct engine's default mode always
SE 4500/50), the input as a scanner gives it (lower resolution 1-1.8 px, coil bias, Rician noise at SNR
20-100, a receiver gain 0.1-1000) and a target protocol drawn the same way; the target is what the same scanner
gives at that protocol: the same gain, bias and resolution, no noise (noise cannot be predicted). Both are
divided by the input's median over the head of the whole volume, as inference does.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

from .config import DIRECT_MODES, REPARAM_ENGINES, ReparamTrainConfig
from .loop import loss_figure, train_network
from .mapper import map_loss, phantom_commands
from .reparam_card import write_reparam_card
from .reparam_eval import evaluate_engines, example_figure
from .routine import RandomTissueValues, RoutineBank, ScanAcquisition
from ..errors import InputError
from ..models.mapper import MapNet, network_input, relaxation_from_outputs, save_mapper, series_scales
from ..models.reparam import DirectNet, direct_inputs, load_reparam, physics_network
from ..phantoms.manifest import has_manifest
from ..physics.scans import DEFAULT_INPUT, describe_scan_ranges, draw_scan, scan_vector
from ..physics.synthesis import synthesize
from ..resources import sha256

__all__ = ["PairBank", "physics_loss", "direct_loss", "model_names", "train_reparam_command"]


class PairBank(RoutineBank):
    """Input/target pairs for both engines from a phantom folder's subjects (see the module text)."""

    def draw_pair(self, n: int, rng: np.random.Generator, default_input: bool) -> Dict[str, Any]:
        """One subject-level draw: input protocol, acquisition, tissue factors, fields, the normalizing scale."""
        protocol = DEFAULT_INPUT if default_input else draw_scan(rng)
        acquisition = ScanAcquisition(rng)
        factors = self.tissues.draw(rng) if self.tissues is not None else None
        fields = self.draw_fields(rng)
        sub = (slice(None), slice(None, None, 3), slice(None, None, 3), slice(None, None, 3))
        image = acquisition.image(self._maps(n, sub, factors, fields), protocol, spatial_dims=3)
        return {"protocol": protocol, "acquisition": acquisition, "factors": factors, "fields": fields,
                "scale": float(series_scales(image[None].numpy())[0])}

    def sample_pairs(self, count: int, crop: int, context: int, rng: np.random.Generator, default_input: bool = False,
                     draws: int = 2) -> Dict[str, Any]:
        """``count`` crops: ``inputs`` ``[B, context, crop, crop]``, ``parameters`` (input scan vectors ``[B, 4]``),
        ``maps`` (truth ``[B, 3, crop, crop]``), ``targets`` (``[B, crop, crop]``), ``protocols`` and
        ``target_protocols`` (per crop); images over the input's scale."""
        inputs, maps_out, targets, protocols, target_protocols = [], [], [], [], []
        half = context // 2
        for size in (count // draws + (k < count % draws) for k in range(draws)):
            n = int(rng.integers(len(self.subjects)))
            d = self.draw_pair(n, rng, default_input)
            depth, h, w = self.subjects[n]["maps"].shape[1:]
            if h < crop or w < crop:
                raise InputError(f"slices of {h}x{w} are smaller than the crop {crop}")
            for _ in range(size):
                s = int(rng.integers(depth))
                y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
                ks = [min(max(k, 0), depth - 1) for k in range(s - half, s + half + 1)]
                maps = self._maps(n, (slice(None), ks, slice(y0, y0 + crop), slice(x0, x0 + crop)), d["factors"], d["fields"])
                seed = int(rng.integers(2 ** 31))
                target = draw_scan(rng)
                image = d["acquisition"].image(maps, d["protocol"], seed=seed) / d["scale"]
                truth = d["acquisition"].image(maps, target, noise=False, seed=seed) / d["scale"]
                inputs.append(network_input(image[None], context)[half])
                maps_out.append(maps[:, half])
                targets.append(truth[half])
                protocols.append(d["protocol"])
                target_protocols.append(target)
        return {"inputs": torch.stack(inputs), "parameters": torch.tensor([scan_vector(p) for p in protocols]),
                "maps": torch.stack(maps_out), "targets": torch.stack(targets), "protocols": protocols,
                "target_protocols": target_protocols}


def _target_error(predicted: torch.Tensor, batch: Dict[str, Any]) -> torch.Tensor:
    """L1 of predicted target images ``[B, H, W]`` over the head, relative to the target's mean there."""
    head = (batch["maps"][:, 2] > 0).float()
    target = batch["targets"]
    return ((predicted - target).abs() * head).flatten(1).sum(1).div(
        (target.abs() * head).flatten(1).sum(1) + 1e-8).mean()


def physics_targets(out: torch.Tensor, batch: Dict[str, Any], context: int) -> torch.Tensor:
    """The physics engine's target images from its outputs: the maps synthesized at each target protocol, at the
    least-squares gain that fits the maps' input image to the input over the head (as inference does)."""
    t1, t2, pd = relaxation_from_outputs(out)
    head = (batch["maps"][:, 2] > 0).float()
    images = []
    for b, (protocol, target) in enumerate(zip(batch["protocols"], batch["target_protocols"])):
        x = batch["inputs"][b, context // 2]
        s = synthesize(t1[b], t2[b], pd[b], protocol)
        gain = (x * s * head[b]).sum() / ((s * s * head[b]).sum() + 1e-8)
        images.append(gain * synthesize(t1[b], t2[b], pd[b], target))
    return torch.stack(images)


def physics_loss(model: MapNet, batch: Dict[str, Any], config: ReparamTrainConfig) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Target term first (the curve's column), then the map estimator's loss with its input-consistency term."""
    out = model(batch["inputs"], batch["parameters"])
    target = _target_error(physics_targets(out, batch, model.context), batch)
    maps, parts = map_loss(out, batch["maps"], batch["inputs"], [{"scan": p} for p in batch["protocols"]],
                           model.context, config.physics_weight)
    return config.target_weight * target + maps, {"target": target.item(), **parts}


def direct_loss(model: DirectNet, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, float]]:
    """L1 over the whole crop (the published model trained on whole images), and the head term for the curve."""
    vectors = torch.tensor([direct_inputs(p, t, model.mode) for p, t in zip(batch["protocols"], batch["target_protocols"])])
    predicted = model(batch["inputs"], vectors)[:, 0]
    loss = (predicted - batch["targets"]).abs().mean()
    return loss, {"target": _target_error(predicted.detach(), batch).item(), "l1": loss.item()}


def model_names(engine: str) -> List[str]:
    """The model files (without ``.pt``) an engine's training writes."""
    return ["physics"] if engine == "physics" else [f"direct-{mode}" for mode in DIRECT_MODES]


def _build(name: str, config: ReparamTrainConfig) -> torch.nn.Module:
    if name == "physics":
        return physics_network(config.channels, config.embedding)
    return DirectNet({"channels": list(config.direct_channels), "mode": name.split("-")[1], "range": config.direct_range})


def _train_model(name: str, bank: PairBank, val: PairBank, config: ReparamTrainConfig, out: Path,
                 log: Callable[[str], None]) -> Dict[str, Any]:
    torch.manual_seed(config.seed)
    model = _build(name, config)
    default_input = name == "direct-default"
    context = model.context if isinstance(model, MapNet) else 1
    batches = [val.sample_pairs(16, config.crop, context, np.random.default_rng([config.seed, 99, k]), default_input)
               for k in range(4)]

    def loss(net, batch):
        return physics_loss(net, batch, config) if name == "physics" else direct_loss(net, batch)

    def validate(net) -> float:  # the target term: one figure both engines are judged by
        return float(np.mean([loss(net, b)[1]["target"] for b in batches]))

    return train_network(name, model, lambda rng: bank.sample_pairs(config.batch, config.crop, context, rng, default_input),
                         loss, validate, config, out, log)


def train_reparam_command(data: Path, out: Path, config: ReparamTrainConfig, engine: str = "both",
                          device: torch.device = torch.device("cpu"), eval_limit: int = 3, overwrite: bool = False,
                          log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train ``engine`` (``physics``, ``direct`` or ``both``), evaluate every engine the folder holds, write the
    report, card and figures. ``device``: training runs on the CPU (small crops, per-crop physics);
    evaluation uses ``device``."""
    engines = list(REPARAM_ENGINES) if engine == "both" else [engine]
    if any(e not in REPARAM_ENGINES for e in engines):
        raise InputError(f"unknown engine {engine!r}; choose physics, direct or both")
    report_path = out / "report.json"
    previous = json.loads(report_path.read_text()) if report_path.is_file() else {}
    done = [e for e in engines if e in previous.get("trained", {})]
    if done and not overwrite:
        raise InputError(f"{out} holds a finished run of {', '.join(done)} (report.json); pass --overwrite to replace it, "
                         "or choose another -o")
    for name in ("train", "val", "test"):
        if not has_manifest(data / name):
            raise InputError(f"{data / name}: missing (train-reparam needs train, val and test folders from syntheticmri phantom)")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for e in engines:
            for name in model_names(e):
                (out / f"{name}.ckpt").unlink(missing_ok=True)
    bank = PairBank(data / "train", tissues=RandomTissueValues())
    val = PairBank(data / "val", tissues=None)
    trained = dict(previous.get("trained", {}))
    for e in engines:
        runs = {name: _train_model(name, bank, val, config, out, log) for name in model_names(e)}
        trained[e] = {"seconds": sum(r["seconds"] for r in runs.values()), "config": asdict(config), "runs": runs}
    if (out / "direct-param.pt").is_file():  # the shipped direct engine takes any input
        save_mapper(load_reparam("direct", out / "direct-param.pt"), out / "direct.pt", {"mode": "param"})
    models = {name: load_reparam("physics" if name == "physics" else "direct", out / f"{name}.pt", device)
              for e in REPARAM_ENGINES if e in trained for name in model_names(e) if (out / f"{name}.pt").is_file()}
    tables = evaluate_engines(data, models, device, config.seed + 1000, eval_limit, log)
    report = {"config": asdict(config), "eval_limit": eval_limit, "trained": trained, "tables": tables,
              "ranges": describe_scan_ranges(), "data": phantom_commands(data),
              "files": {name: {"sha256": sha256(out / f"{name}.pt"), "bytes": (out / f"{name}.pt").stat().st_size}
                        for name in ("physics", "direct") if (out / f"{name}.pt").is_file()}}
    loss_figure({name: run for engine in trained.values() for name, run in engine["runs"].items()}, out / "loss.png",
                "target error (relative L1)")
    if "physics" in models:
        example_figure(data, models, device, config.seed + 1000, out / "examples.png")
    write_reparam_card(report, out / "MODEL_CARD.md")
    report_path.write_text(json.dumps(report, indent=1))
    log(f"report {report_path}, card {out / 'MODEL_CARD.md'}")
    return report
