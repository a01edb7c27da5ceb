"""Training the map estimator and its baselines, and the one evaluation table.

``syntheticmri train-maps --data DIR -o OUT`` trains, in one run, with the same data draws, steps and batch,
the variants of :data:`MAP_VARIANTS`:

* ``film``: parameter embedding (FiLM) + map loss + physics-consistency term, 2-D;
* ``film-2.5d``: the same with each slice's neighbours as channels;
* ``no-embedding``: no protocol input (baseline a);
* ``no-physics``: no physics term (baseline b);

then evaluates them and the classical per-voxel fit (baseline c, :mod:`~SyntheticMRILib.models.voxelfit`) on
``test``, ``external``, ``lesions`` (test subjects with lesions) and ``test`` at out-of-range protocols, and
writes ``OUT/<variant>.pt``, ``OUT/maps.pt`` (the variant that wins on ``val``), ``OUT/report.json``,
``OUT/MODEL_CARD.md``, ``OUT/loss.png``. Checkpoints every ``evaluations``-th of the run; a rerun resumes.

``DIR`` holds ``train``, ``val``, ``test`` and optionally ``external`` and ``lesions`` folders written by
``syntheticmri phantom``; ``train`` must be healthy. Each evaluated subject is acquired once per protocol draw
(seeded by the subject), and every method sees the same series.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import MAP_VARIANTS, MapTrainConfig
from .loop import loss_figure, train_network
from .map_metrics import brain_mask, map_scores, mean_scores
from .routine import Acquisition, RandomTissueValues, RoutineBank, acquire
from ..errors import InputError
from ..io.volumes import read_volume
from ..models.mapper import MAP_SCALE_MS, MapNet, load_mapper, predict_maps, relaxation_from_outputs, save_mapper
from ..models.voxelfit import calibrate_gains, fit_maps
from ..phantoms.manifest import has_manifest, read_manifest
from ..physics.routine import SERIES, describe_ranges, draw_protocols
from ..physics.synthesis import synthesize
from ..resources import sha256

__all__ = ["MapTrainConfig", "MAP_VARIANTS", "build_map_variant", "map_loss", "train_map_variant",
           "evaluate_split", "train_maps_command"]

def build_map_variant(name: str, config: MapTrainConfig) -> MapNet:
    if name not in MAP_VARIANTS:
        raise InputError(f"unknown variant {name!r}; choose from {', '.join(MAP_VARIANTS)}")
    return MapNet({"channels": list(config.channels), "context": 3 if name == "film-2.5d" else 1,
                   "embedding": 0 if name == "no-embedding" else config.embedding, "variant": name,
                   "physics_term": name != "no-physics"})


def map_loss(out: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor, protocols: List[Dict[str, Any]],
             context: int, physics_weight: float) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Map loss (L1 of log T1, log T2 and 3 x PD over the head, plus the head mask's cross-entropy) and the
    physics term: the predicted maps, re-synthesized at each input's protocols with the least-squares gain,
    must reproduce the normalized inputs (L1 over the head, relative to the input's mean)."""
    t1, t2, pd = targets.unbind(1)
    head = pd > 0
    weight = head.float()
    count = weight.sum().clamp(min=1)
    log1 = torch.log(t1.clamp(min=1) / MAP_SCALE_MS[0])
    log2 = torch.log(t2.clamp(min=1) / MAP_SCALE_MS[1])
    p1, p2, pd_pred = relaxation_from_outputs(out)
    maps_term = (((out[:, 0] - log1).abs() + (out[:, 1] - log2).abs() + 3 * (pd_pred - pd).abs()) * weight).sum() / count
    mask_term = F.binary_cross_entropy_with_logits(out[:, 3], weight)
    parts = {"maps": maps_term.item(), "mask": mask_term.item()}
    loss = maps_term + 0.2 * mask_term
    if physics_weight > 0:
        terms = []
        for b, protocol in enumerate(protocols):
            for n, name in enumerate(protocol):  # the series in input order
                x = inputs[b, n * context + context // 2]
                s = synthesize(p1[b], p2[b], pd_pred[b], protocol[name])
                m = weight[b]
                gain = (x * s * m).sum() / ((s * s * m).sum() + 1e-8)
                terms.append(((gain * s - x).abs() * m).sum() / ((x.abs() * m).sum() + 1e-8))
        physics_term = torch.stack(terms).mean()
        parts["physics"] = physics_term.item()
        loss = loss + physics_weight * physics_term
    return loss, parts


def _validation_loss(model: MapNet, batches: List[Dict[str, Any]]) -> float:
    return float(np.mean([map_loss(model(b["inputs"], b["parameters"]), b["targets"], b["inputs"], b["protocols"],
                                   model.context, 0.0)[1]["maps"] for b in batches]))


def train_map_variant(name: str, bank: RoutineBank, val_batches: Dict[int, List[Dict[str, Any]]], config: MapTrainConfig,
                      out: Path, device: torch.device, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train one variant (resuming ``out/<name>.ckpt``); return its curves and best validation loss."""
    torch.manual_seed(config.seed)
    model = build_map_variant(name, config).to(device)
    physics = config.physics_weight if model.config["physics_term"] else 0.0
    keys = ("inputs", "parameters", "targets")
    val = [{**b, **{k: b[k].to(device) for k in keys}} for b in val_batches[model.context]]

    def draw(rng: np.random.Generator) -> Dict[str, Any]:
        batch = bank.sample(config.batch, config.crop, model.context, rng)
        return {**batch, **{k: batch[k].to(device) for k in keys}}

    def loss(net: MapNet, batch: Dict[str, Any]):
        return map_loss(net(batch["inputs"], batch["parameters"]), batch["targets"], batch["inputs"],
                        batch["protocols"], net.context, physics)

    return train_network(name, model, draw, loss, lambda net: _validation_loss(net, val), config, out, log)


# --------------------------------------------------------------------------- evaluation


def _subjects(folder: Path) -> List[Dict[str, Any]]:
    manifest = read_manifest(folder)
    return [{"id": r["id"], "field": float(r["field_strength"]), "lesion": r.get("lesion"),
             "files": {k: folder / v for k, v in r["files"].items()}} for r in manifest["subjects"]]


def acquired_subject(record: Dict[str, Any], seed: int, outside: bool = False) -> Dict[str, Any]:
    """A test subject's truth and its three series at a protocol draw seeded by the subject (every method
    sees these same series)."""
    files = record["files"]
    truth = np.stack([read_volume(files[m]).array.astype(np.float32) for m in ("t1", "t2", "pd")])
    labels = read_volume(files["labels"]).array
    lesions = read_volume(files["lesions"]).array if "lesions" in files else None
    rng = np.random.default_rng([seed, zlib.crc32(record["id"].encode())])
    protocols = draw_protocols(rng, outside)
    acquisition = Acquisition.draw(rng)
    series = acquire(torch.from_numpy(truth), protocols, acquisition, spatial_dims=3).numpy()
    return {"truth": truth, "labels": labels, "lesions": lesions, "protocols": protocols, "series": series,
            "field": record["field"], "id": record["id"]}


def _round_trip(maps: Tuple[np.ndarray, ...], subject: Dict[str, Any]) -> float:
    """PSNR (dB, over the brain, data range its maximum) of the noise-free series against the series the
    estimated maps give through the physics layer (each at its least-squares gain)."""
    mask = brain_mask(subject["labels"])
    truth, estimate = (torch.from_numpy(np.stack([m[mask] for m in source])) for source in (subject["truth"], maps))
    values = []
    for name in SERIES:
        a = synthesize(*truth, subject["protocols"][name])
        b = synthesize(*estimate, subject["protocols"][name])
        b = b * (a @ b) / (b @ b + 1e-12)
        values.append(float(10 * torch.log10(a.max() ** 2 / ((a - b) ** 2).mean())))
    return float(np.mean(values))


def estimate_with(method: str, models: Dict[str, MapNet], subject: Dict[str, Any], device: torch.device) -> Tuple[np.ndarray, ...]:
    if method == "voxel-fit":
        wm = np.isin(subject["labels"], (2, 41))
        gains = calibrate_gains(subject["series"], wm, subject["protocols"], field=subject["field"])
        return fit_maps(subject["series"], subject["labels"] > 0, subject["protocols"], gains)
    return predict_maps(models[method], subject["series"], subject["protocols"], device)


def evaluate_split(folder: Path, methods: List[str], models: Dict[str, MapNet], device: torch.device, seed: int,
                   outside: bool = False, lesions_only: bool = False, log: Callable[[str], None] = print,
                   limit: Optional[int] = None) -> Dict[str, Any]:
    """Mean scores of each method over a phantom folder's subjects (see :mod:`.map_metrics`), and the round trip."""
    rows: Dict[str, List[Dict[str, Any]]] = {m: [] for m in methods}
    trips: Dict[str, List[float]] = {m: [] for m in methods}
    for record in _subjects(folder):
        if lesions_only and not record["lesion"]:
            continue
        if limit is not None and len(rows[methods[0]]) >= limit:
            break
        subject = acquired_subject(record, seed, outside)
        for method in methods:
            maps = estimate_with(method, models, subject, device)
            rows[method].append(map_scores(maps, subject["truth"], subject["labels"], subject["lesions"]))
            trips[method].append(_round_trip(maps, subject))
        log(f"{folder.name} {record['id']}: " + ", ".join(
            f"{m} T1 PSNR {rows[m][-1]['t1']['psnr']:.1f}" for m in methods))
    return {m: {"subjects": len(rows[m]), **mean_scores(rows[m]), "round_trip_psnr": float(np.mean(trips[m]))}
            for m in methods if rows[m]}


def _val_batches(folder: Path, config: MapTrainConfig) -> Dict[int, List[Dict[str, Any]]]:
    """Fixed validation crops (same draws for 2-D and 2.5-D), the phantoms' own tissue values."""
    bank = RoutineBank(folder, tissues=None)
    return {context: [bank.sample(16, config.crop, context, np.random.default_rng([config.seed, 99, k]))
                      for k in range(4)] for context in (1, 3)}


def phantom_commands(data: Path) -> List[str]:
    """The ``syntheticmri phantom`` commands that rebuild the folders of ``data`` (from their manifests)."""
    commands = []
    for name in ("train", "val", "test", "external", "lesions"):
        if not has_manifest(data / name):
            continue
        m = read_manifest(data / name)
        if not {"split", "count", "seed"} <= set(m):  # a folder put together by hand: no command makes it
            continue
        sources = m.get("source_order") or sorted({s["source"] for s in m["subjects"]})  # the order draws depend on
        command = f"syntheticmri phantom --split {m['split']} --count {m['count']} --seed {m['seed']}"
        if m["split"] != "external":
            command += f" --sources {','.join(sources)}"
        if m.get("lesions", "none") != "none":
            command += f" --lesions {m['lesions']}"
        commands.append(command + f" -o phantoms/{name}")
    return commands


def train_maps_command(data: Path, out: Path, config: MapTrainConfig, variants: Optional[List[str]] = None,
                       device: torch.device = torch.device("cpu"), eval_limit: int = 3, overwrite: bool = False,
                       log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train every variant, pick the product model on ``val``, evaluate all methods; write the report and card.
    A folder with a finished report is refused unless ``overwrite``, which also drops its checkpoints."""
    variants = list(variants or MAP_VARIANTS)
    if (out / "report.json").exists() and not overwrite:
        raise InputError(f"{out} holds a finished run (report.json); pass --overwrite to replace it, or choose another -o")
    if overwrite:
        for stale in out.glob("*.ckpt"):
            stale.unlink()
    for name in ("train", "val", "test"):
        if not has_manifest(data / name):
            raise InputError(f"{data / name}: missing (train-maps needs train, val and test folders from syntheticmri phantom)")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bank = RoutineBank(data / "train", tissues=RandomTissueValues())
    val = _val_batches(data / "val", config)
    runs = {name: train_map_variant(name, bank, val, config, out, device, log) for name in variants}
    training_s = time.perf_counter() - start
    best = min(variants, key=lambda n: runs[n]["best_val"])
    models = {name: load_mapper(out / f"{name}.pt", device) for name in variants}
    save_mapper(models[best], out / "maps.pt", {"variant": best, "recipe": asdict(config)})
    methods = variants + ["voxel-fit"]
    splits = {"test": (data / "test", False, False), "external": (data / "external", False, False),
              "lesions": (data / "lesions", False, True), "out-of-range": (data / "test", True, False)}
    tables = {}
    for split, (folder, outside, lesions_only) in splits.items():
        if not has_manifest(folder):
            log(f"{split}: {folder} not there; skipped")
            continue
        tables[split] = evaluate_split(folder, methods, models, device, config.seed + 1000, outside,
                                       lesions_only, log, limit=eval_limit)
    report = {"config": asdict(config), "eval_limit": eval_limit, "variants": variants, "chosen": best, "training_s": training_s,
              "val_loss": {n: runs[n]["best_val"] for n in variants}, "tables": tables,
              "ranges": describe_ranges(), "data": phantom_commands(data), "sha256": sha256(out / "maps.pt"), "size_bytes": (out / "maps.pt").stat().st_size}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    loss_figure(runs, out / "loss.png", "map loss")
    from .map_card import write_map_card

    write_map_card(report, out / "MODEL_CARD.md")
    log(f"chosen on val: {best}; report {out / 'report.json'}, card {out / 'MODEL_CARD.md'}")
    return report
