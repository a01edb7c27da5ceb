"""Training the subcortical segmenter jointly with its contrasts, and the baselines it is judged against.

``syntheticmri train-seg --data DIR -o OUT`` trains, in one run and with the same data
order, steps, batch and augmentation, the variants of :data:`VARIANTS`:

* ``learned``: the learnable contrast module (LCM) from the T1w, T2w and T2-FLAIR presets,
  its TR/TE/TI trained with the U-Net by the Dice+CE loss (its own learning rate);
* ``fixed``: the same, parameters frozen at the presets (baseline a);
* ``maps``: the U-Net on the scaled T1/T2/PD maps, no physics (baseline b);
* ``random``: the LCM from a random start (baseline c).

``DIR`` holds ``train``, ``val``, ``test`` (and optionally ``external``) folders written by
``syntheticmri phantom``. Training reads only their labels: the maps of every crop are drawn
anew (:mod:`.randomize`), and each contrast is divided by its head mean over the crop's whole
volume, the normalization inference uses. Model selection uses ``val`` (randomized maps) only;
``test``, its ``randomized`` and ``stress`` redraws and ``external`` are read once, at the end,
through the same :func:`~SyntheticMRILib.models.segmenter.segment` that users call. Scanner
augmentation (Rician noise at an absolute level, so a contrast that loses signal loses SNR; a
smooth coil bias; a lower acquired resolution) is applied to the synthesized contrasts, before
their normalization.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..models.contrast import DEFAULT_PRESETS, LearnableContrast
from .config import SHIP_BAR, VARIANTS, TrainConfig, shipping_verdict
from ..errors import InputError
from ..io.maps import Maps, load_maps
from .augment import scanner_effects
from .randomize import MAX_SLICES, MapRandomizer, Randomization, randomized_maps, tissue_numbers, volume_weights
from ..physics.protocols import preset
from ..models.segmenter import (CLASS_NAMES, LABELS, SegmentationModel, label_dice, load_model, predict_classes,
                                save_model, segment)
from ..io.volumes import PathLike, read_volume
from ..phantoms.manifest import has_manifest, read_manifest
from ..resources import sha256

__all__ = ["TrainConfig", "VARIANTS", "build_variant", "SliceBank", "train_variant", "evaluate_folder", "summarize",
           "train_command"]

def contrast_model(name: str, config: TrainConfig, contrast: LearnableContrast) -> SegmentationModel:
    """The recipe's U-Net over ``contrast``, recorded as variant ``name``."""
    return SegmentationModel({**_model_config(name, config), "inputs": "contrasts", "sequences": list(contrast.sequences)},
                             contrast)


def _model_config(name: str, config: TrainConfig) -> Dict[str, Any]:
    return {"channels": list(config.channels), "num_res_units": config.num_res_units, "variant": name,
            "normalization": "volume"}


def build_variant(name: str, config: TrainConfig) -> SegmentationModel:
    model_config = _model_config(name, config)
    if name == "maps":
        return SegmentationModel({**model_config, "inputs": "maps"})
    if name in ("learned", "fixed"):
        contrast = LearnableContrast.from_presets(DEFAULT_PRESETS, learnable=name == "learned")
    elif name == "random":
        sequences = [preset(name).protocol.sequence for name in DEFAULT_PRESETS]
        contrast = LearnableContrast.random(sequences, seed=config.random_start_seed)
    else:
        raise InputError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return contrast_model(name, config, contrast)


# --------------------------------------------------------------------------- data


def _subject_files(folder: Path) -> List[Dict[str, Path]]:
    records = read_manifest(folder)["subjects"]
    return [{name: folder / path for name, path in record["files"].items()} | {"id": record["id"]} for record in records]


def _classes(labels: np.ndarray) -> np.ndarray:
    lut = np.zeros(max(int(labels.max()) + 1, max(LABELS) + 1), np.uint8)
    lut[list(LABELS)] = np.arange(len(LABELS), dtype=np.uint8)
    return lut[labels.astype(np.int64)]


class SliceBank:
    """The training subjects in memory as tissue numbers and classes (axial slabs around their structures), for crops
    whose maps are drawn anew each time by :class:`~.randomize.MapRandomizer`."""

    def __init__(self, folder: PathLike, limit: Optional[int] = None) -> None:
        self.tissues: List[torch.Tensor] = []
        self.classes: List[torch.Tensor] = []
        self.weights: List[torch.Tensor] = []  # voxels per tissue number over the whole volume: the normalization's
        for files in _subject_files(Path(folder))[:limit]:
            labels = read_volume(files["labels"])
            if not np.allclose(labels.spacing, 1.0, atol=1e-3):
                raise InputError(f"{files['labels']}: training needs 1 mm phantoms")
            numbers = tissue_numbers(labels.array)
            rows = np.flatnonzero(labels.array.reshape(labels.array.shape[0], -1).any(1))
            keep = slice(max(rows[0] - MAX_SLICES // 2, 0), rows[-1] + MAX_SLICES // 2 + 1)
            self.tissues.append(torch.from_numpy(numbers[keep]))
            self.classes.append(torch.from_numpy(_classes(labels.array[keep])))
            self.weights.append(torch.from_numpy(volume_weights(numbers)))
        self.with_structures = [(n, int(k)) for n, c in enumerate(self.classes)
                                for k in torch.nonzero(c.flatten(1).amax(1) > 0).flatten()]
        self.subjects = len(self.tissues)

    def sample(self, count: int, crop: int, focus: float, rng: np.random.Generator) -> Tuple[torch.Tensor, ...]:
        """``count`` random ``crop``-square patches: tissue numbers ``[B, MAX_SLICES, crop, crop]`` (the slab around
        the labelled slice), classes ``[B, crop, crop]`` (long) and the tissue weights of their volumes ``[B, ROWS]``."""
        patches: List[List[torch.Tensor]] = [[], [], []]
        for _ in range(count):
            if rng.random() < focus:
                n, k = self.with_structures[rng.integers(len(self.with_structures))]
                ys, xs = torch.nonzero(self.classes[n][k], as_tuple=True)
                pick = rng.integers(len(ys))
                cy, cx = int(ys[pick]) + rng.integers(-crop // 4, crop // 4 + 1), int(xs[pick]) + rng.integers(-crop // 4, crop // 4 + 1)
            else:
                n = int(rng.integers(self.subjects))
                k, cy, cx = (int(rng.integers(size)) for size in self.classes[n].shape)
            d, h, w = self.classes[n].shape
            if h < crop or w < crop:
                raise InputError(f"slices of {h}x{w} are smaller than the crop {crop}")
            y0, x0 = int(np.clip(cy - crop // 2, 0, h - crop)), int(np.clip(cx - crop // 2, 0, w - crop))
            ks = torch.arange(k - MAX_SLICES // 2, k + MAX_SLICES // 2 + 1).clamp(0, d - 1)
            patches[0].append(self.tissues[n][ks, y0:y0 + crop, x0:x0 + crop])
            patches[1].append(self.classes[n][k, y0:y0 + crop, x0:x0 + crop])
            patches[2].append(self.weights[n])
        tissues, classes, weights = (torch.stack(p) for p in patches)
        return tissues, classes.long(), weights


def _training_maps(bank: SliceBank, config: TrainConfig, randomizer: MapRandomizer, rng: np.random.Generator,
                   model: SegmentationModel, device: torch.device) -> Tuple[torch.Tensor, ...]:
    """One batch: maps of freshly drawn tissue values (the labelled slice of each slab), their volumes' normalization
    scales (:meth:`SegmentationModel.scale` over the tissue values, weighted by voxel counts) and the classes."""
    tissues, classes, weights = bank.sample(config.batch, config.crop, config.focus, rng)
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    values = randomizer.values(len(tissues), generator)
    t1, t2, pd = (m[:, MAX_SLICES // 2].to(device) for m in randomizer.render(tissues, values, generator))
    table = values.to(torch.float32).to(device)
    scale = model.scale(table[..., 0], table[..., 1], table[..., 2], weights.to(device))
    return t1, t2, pd, scale, classes.to(device)


def _scanner(config: TrainConfig, rng: np.random.Generator, maps_input: bool) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """One draw of acquisition effects for a batch (each image still gets its own noise and bias field)."""
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    loss = float(rng.uniform(*config.resolution_loss))
    snr = float(rng.uniform(*config.snr))
    if maps_input:  # fitted maps: their noise and blur are the randomizer's; a coil bias cancels out of T1 and T2
        return None
    return lambda x: scanner_effects(x, generator, snr=None, sigma=1.0 / snr, bias=config.bias, resolution_loss=loss)


# --------------------------------------------------------------------------- evaluation


def _structure_dice(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-structure Dice of two class maps (:func:`~SyntheticMRILib.models.segmenter.label_dice` on classes 1-14)."""
    return label_dice(predicted, truth, range(1, len(LABELS)))


def _hd95(predicted: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Per-structure 95 % Hausdorff distance (mm) of two class maps ``[k, j, i]`` (MONAI's metric); NaN or inf
    where a structure is missing from either map."""
    from monai.metrics import HausdorffDistanceMetric
    from monai.networks.utils import one_hot

    classes = len(LABELS)
    p = one_hot(torch.from_numpy(predicted.astype(np.int64))[None, None], classes)
    t = one_hot(torch.from_numpy(truth.astype(np.int64))[None, None], classes)
    return HausdorffDistanceMetric(include_background=False, percentile=95)(p, t, spacing=list(spacing)[::-1])[0].numpy()


EVALUATION_SEED = 1000  # the randomized draws of validation and evaluation subjects (fixed: every variant sees the same)


def _randomized(files: Dict[str, Path], randomization: Randomization, seed: int) -> Maps:
    labels = read_volume(files["labels"])
    return Maps(*randomized_maps(labels.array, randomization, seed), grid=labels)


class ValidationSet:
    """Validation subjects with randomized maps (:data:`EVALUATION_SEED`): the Dice that selects the model."""

    def __init__(self, folder: PathLike, limit: Optional[int] = None) -> None:
        self.items = []
        for n, files in enumerate(_subject_files(Path(folder))[:limit]):
            maps = _randomized(files, Randomization(), EVALUATION_SEED + n)
            self.items.append(((maps.t1, maps.t2, maps.pd), _classes(read_volume(files["labels"]).array)))

    def mean_dice(self, model: SegmentationModel, device: torch.device) -> float:
        scores = [_structure_dice(predict_classes(model, *maps, device=device), classes) for maps, classes in self.items]
        return float(np.mean(scores))


SPLITS = ("test", "randomized", "stress", "external")


def evaluation_splits(data: Path) -> Dict[str, Tuple[Path, Optional[Randomization]]]:
    """Name -> (phantom folder, randomization of its maps or None for the folder's own maps): ``test`` as generated,
    ``randomized`` (the test anatomy with maps drawn as in training), ``stress`` (values 10 % outside the training
    ranges, doubled map noise), ``external`` when generated."""
    splits = {"test": (data / "test", None), "randomized": (data / "test", Randomization()),
              "stress": (data / "test", Randomization().stressed()), "external": (data / "external", None)}
    return {name: split for name, split in splits.items() if has_manifest(split[0])}


def evaluate_folder(model: SegmentationModel, folder: PathLike, device: torch.device,
                    progress: Optional[Callable[[str], None]] = None, randomization: Optional[Randomization] = None) -> Dict[str, Any]:
    """Dice and HD95 of every structure of every subject of a phantom folder, through :func:`segment`; with
    ``randomization``, on maps drawn from each subject's labels (seeded by its position) instead of its own maps."""
    rows = []
    for n, files in enumerate(_subject_files(Path(folder))):
        if randomization is None:
            maps = load_maps(files["t1"], files["t2"], files["pd"])
        else:
            maps = _randomized(files, randomization, EVALUATION_SEED + 100 + n)
        start = time.perf_counter()
        labels = segment(maps, model, device)
        seconds = time.perf_counter() - start
        truth = read_volume(files["labels"])
        predicted, expected = _classes(labels.array), _classes(truth.array)
        dice, hd = _structure_dice(predicted, expected), _hd95(predicted, expected, truth.spacing)
        rows.append({"id": files["id"], "seconds": seconds, "dice": dice.tolist(), "hd95": hd.tolist()})
        if progress is not None:
            progress(f"{files['id']}: mean Dice {np.mean(dice):.3f}")
    return summarize(rows)


def summarize(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Means over subjects of per-subject scores. A structure the model did not find at all has no Hausdorff
    distance: HD95 averages the cases that have one and ``missed`` counts the others (subject x structure)."""
    dice = np.array([r["dice"] for r in rows], float)
    hd = np.array([r["hd95"] for r in rows], float)
    found = np.isfinite(hd)
    hd_sum = np.where(found, hd, 0.0)
    per_structure = np.divide(hd_sum.sum(0), found.sum(0), out=np.full(hd.shape[1], np.nan), where=found.any(0))
    return {"subjects": rows, "dice": dice.mean(0).tolist(), "hd95": per_structure.tolist(),
            "mean_dice": float(dice.mean()), "min_structure_dice": float(dice.mean(0).min()),
            "mean_hd95": float(hd_sum.sum() / max(found.sum(), 1)), "missed": int((~found).sum())}


# --------------------------------------------------------------------------- training


def _protocol_log(model: SegmentationModel) -> List[Dict[str, Any]]:
    if model.contrast is None:
        return []
    return [{"sequence": p.sequence, **{k: getattr(p, k) for k in ("tr", "te", "ti", "ti2", "flip") if getattr(p, k) is not None}}
            for p in model.contrast.protocols()]


def _schedule(config: TrainConfig, warmup_share: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_share`` of the run, then cosine decay to zero."""
    warmup = max(1, int(config.steps * warmup_share))
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps))


def train_variant(name: str, config: TrainConfig, bank: SliceBank, validation: ValidationSet, out: Path,
                  device: torch.device, resume: bool = True, log: Callable[[str], None] = print,
                  model: Optional[SegmentationModel] = None) -> Dict[str, Any]:
    """Train one variant (``model``, or :func:`build_variant` of ``name``); ``out/<name>/`` gets ``checkpoint.pt``
    (resumable), ``best.pt`` and ``history.json``."""
    from monai.losses import DiceCELoss
    from tqdm import tqdm

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = (model if model is not None else build_variant(name, config)).to(device)
    physics = [p for p in model.contrast.parameters() if p.requires_grad] if model.contrast is not None else []
    groups = [{"params": list(model.unet.parameters()), "lr": config.lr, "weight_decay": config.weight_decay}]
    if physics:
        groups.append({"params": physics, "lr": config.physics_lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    schedules = [_schedule(config, 0.05), _schedule(config, config.physics_warmup)][: len(groups)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(config.seed)  # the same crops, in the same order, for every variant
    randomizer = MapRandomizer(Randomization())
    history: Dict[str, Any] = {"variant": name, "config": asdict(config), "evaluations": [], "seconds": 0.0,
                               "start": _protocol_log(model)}
    step, best = 0, -1.0
    checkpoint = folder / "checkpoint.pt"
    if resume and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["config"] != asdict(config):
            raise InputError(f"{checkpoint} was written with another recipe; remove it or use --no-resume")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        step, history, best = saved["step"], saved["history"], saved["best"]
        log(f"{name}: resuming at step {step}")
    every = max(1, config.steps // config.evaluations)
    running: List[float] = []
    started = time.perf_counter() - history["seconds"]
    bar = tqdm(total=config.steps, initial=step, desc=f"train {name}", unit="step", dynamic_ncols=True)
    while step < config.steps:
        model.train()
        t1, t2, pd, scale, target = _training_maps(bank, config, randomizer, rng, model, device)
        logits = model(t1, t2, pd, scale, _scanner(config, rng, model.contrast is None))
        loss = loss_function(logits, target[:, None])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        running.append(loss.detach().item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
        if step % every == 0 or step == config.steps:
            dice = validation.mean_dice(model, device)
            entry = {"step": step, "loss": float(np.mean(running)), "val_dice": dice, "protocols": _protocol_log(model),
                     "seconds": time.perf_counter() - started}
            history["evaluations"].append(entry)
            history["seconds"] = entry["seconds"]
            running = []
            if dice > best:
                best = dice
                save_model(model, folder / "best.pt", {"step": step, "val_dice": dice})
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                        "history": history, "best": best, "config": asdict(config)}, checkpoint)
            (folder / "history.json").write_text(json.dumps(history, indent=1))
            bar.write(f"{name} step {step}: loss {entry['loss']:.3f}, val Dice {dice:.3f}"
                      + "".join(f" | {_caption(p)}" for p in entry["protocols"]))
    bar.close()
    history["best_val_dice"] = best
    return history


def _caption(p: Dict[str, Any]) -> str:
    return f"{p['sequence']} " + " ".join(f"{k.upper()} {v:.0f}" for k, v in p.items() if k != "sequence")


# --------------------------------------------------------------------------- report


def _table(results: Dict[str, Dict[str, Any]], split: str, key: str, fmt: str) -> List[str]:
    names = [n for n in results if split in results[n]["evaluation"]]
    lines = [f"| structure | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for c, structure in enumerate(CLASS_NAMES[1:]):
        lines.append(f"| {structure} | " + " | ".join(fmt.format(results[n]['evaluation'][split][key][c]) for n in names) + " |")
    mean_key = "mean_dice" if key == "dice" else "mean_hd95"
    lines.append("| **mean** | " + " | ".join(f"**{fmt.format(results[n]['evaluation'][split][mean_key])}**" for n in names) + " |")
    if key == "hd95":
        lines.append("| structures not found (subject x structure) | "
                     + " | ".join(str(results[n]["evaluation"][split]["missed"]) for n in names) + " |")
    return lines


def write_report(results: Dict[str, Dict[str, Any]], out: Path) -> Path:
    """``report.md`` (Dice and HD95 tables per split, learned parameters), ``training.png`` and ``dice.png``."""
    lines = ["# Subcortical segmentation: learned contrast vs baselines", ""]
    for split in SPLITS:
        if not any(split in r["evaluation"] for r in results.values()):
            continue
        lines += [f"## {split}: Dice", ""] + _table(results, split, "dice", "{:.3f}") + [""]
        lines += [f"## {split}: 95 % Hausdorff distance (mm)", ""] + _table(results, split, "hd95", "{:.2f}") + [""]
    lines += ["## Contrasts (start -> selected model)", ""]
    for name, result in results.items():
        history = result["history"]
        chosen = next((e for e in history["evaluations"] if e["val_dice"] == history["best_val_dice"]), None)
        for k, start in enumerate(history["start"]):
            end = chosen["protocols"][k] if chosen else start
            lines.append(f"- {name} contrast {k + 1}: {_caption(start)} -> {_caption(end)}")
    lines += ["", "## Training", ""]
    for name, result in results.items():
        history = result["history"]
        lines.append(f"- {name}: {history['config']['steps']} steps in {history['seconds'] / 60:.1f} min, "
                     f"best val Dice {history['best_val_dice']:.3f}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(results, out / "training.png")
    _plot_dice(results, out / "dice.png")
    return out / "report.md"


def _plot_dice(results: Dict[str, Dict[str, Any]], path: Path) -> None:
    """Per-structure Dice of every variant, one panel per evaluated split: the comparison table as a picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [s for s in SPLITS if any(s in r["evaluation"] for r in results.values())]
    if not splits:
        return
    figure, axes = plt.subplots(len(splits), 1, figsize=(15, 3.6 * len(splits)), squeeze=False)
    width = 0.8 / len(results)
    for axis, split in zip(axes[:, 0], splits):
        for n, (name, result) in enumerate(results.items()):
            if split not in result["evaluation"]:
                continue
            scores = result["evaluation"][split]
            x = np.arange(len(CLASS_NAMES) - 1) + (n - (len(results) - 1) / 2) * width
            axis.bar(x, scores["dice"], width, label=f"{name} (mean {scores['mean_dice']:.3f})", color=f"C{n}")
        axis.set_xticks(np.arange(len(CLASS_NAMES) - 1), [c.replace("-area", "").replace("-", "\n", 1) for c in CLASS_NAMES[1:]], fontsize=7)
        lowest = min(min(r["evaluation"][split]["dice"]) for r in results.values() if split in r["evaluation"])
        axis.set(ylim=(min(0.5, np.floor(lowest * 10) / 10), 1.0), ylabel="Dice", title=f"{split}: Dice per structure")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot(results: Dict[str, Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    learned = [n for n in results if results[n]["history"]["start"] and n != "fixed"]
    figure, axes = plt.subplots(1, 2 + len(learned), figsize=(5 * (2 + len(learned)), 4), squeeze=False)
    loss_axis, dice_axis = axes[0, 0], axes[0, 1]
    for name, result in results.items():
        evaluations = result["history"]["evaluations"]
        steps = [e["step"] for e in evaluations]
        loss_axis.plot(steps, [e["loss"] for e in evaluations], marker="o", label=name)
        dice_axis.plot(steps, [e["val_dice"] for e in evaluations], marker="o", label=name)
    loss_axis.set(title="training loss (Dice + CE)", xlabel="step")
    dice_axis.set(title="validation mean Dice", xlabel="step")
    loss_axis.legend()
    dice_axis.legend()
    for axis, name in zip(axes[0, 2:], learned):
        history = results[name]["history"]
        steps = [0] + [e["step"] for e in history["evaluations"]]
        protocols = [history["start"]] + [e["protocols"] for e in history["evaluations"]]
        for k in range(len(history["start"])):
            for key, style in (("tr", "-"), ("te", ":"), ("ti", "--")):
                if key in protocols[0][k]:
                    axis.plot(steps, [p[k][key] for p in protocols], style, marker=".", color=f"C{k}",
                              label=f"{k + 1} {protocols[0][k]['sequence']} {key.upper()}")
        axis.set(yscale="log", title=f"{name}: sequence parameters", xlabel="step", ylabel="ms")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------- the model card

def _anatomies(info: Dict[str, Any]) -> List[str]:
    return sorted({s["anatomy"] for s in info["subjects"]})


def _phantom_command(split: str, info: Dict[str, Any]) -> str:
    sources = "" if split == "external" else f" --sources {','.join(sorted(info['sources']))}"
    return f"syntheticmri phantom --split {split} --count {info['count']} --seed {info['seed']}{sources} -o data/{split}"


def _split_summary(split: str, info: Optional[Dict[str, Any]]) -> str:
    if info is None:
        return f"- `{split}`: not generated"
    fields = sorted({s["field_strength"] for s in info["subjects"]})
    return (f"- `{split}`: {len(info['subjects'])} subjects (seed {info['seed']}), anatomy {', '.join(_anatomies(info))}, "
            f"{', '.join(f'{f:g} T' for f in fields)}, {info['resolution_mm']:g} mm, lesions: {info['lesions']}")


def write_model_card(results: Dict[str, Dict[str, Any]], data: Path, out: Path, config: TrainConfig,
                     device: torch.device) -> Path:
    """``out/model/``: the shippable files (``subcortical.pt``, ``baselines/<variant>.pt``, the two figures) and
    ``MODEL_CARD.md`` with data, recipe, learned parameters, the comparison table and every file's sha256."""
    import platform
    import shutil

    ship = out / "model"
    (ship / "baselines").mkdir(parents=True, exist_ok=True)
    files = {"subcortical.pt": out / "learned" / "best.pt"}
    files.update({f"baselines/{name}.pt": out / name / "best.pt" for name in results if name != "learned"})
    for target, source in files.items():
        shutil.copyfile(source, ship / target)
    for figure in ("training.png", "dice.png"):
        shutil.copyfile(out / figure, ship / figure)
    learned = results["learned"]["history"]
    chosen = next(e for e in learned["evaluations"] if e["val_dice"] == learned["best_val_dice"])
    minutes = sum(r["history"]["seconds"] for r in results.values()) / 60
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    threads = f"{torch.get_num_threads()} thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(device)
    report = (out / "report.md").read_text().split("\n", 2)[2]  # without its title
    manifests = {split: read_manifest(data / split) if has_manifest(data / split) else None
                 for split in ("train", "val", "test", "external")}
    anatomies = _anatomies(manifests["train"])
    lines = [
        "# Model card: subcortical segmentation from learned synthetic contrasts",
        "",
        "`subcortical.pt` segments 14 subcortical structures (thalamus, caudate, putamen, pallidum, hippocampus, "
        "amygdala, accumbens; left and right; FreeSurfer numbering) from quantitative T1, T2 (ms) and PD maps at "
        f"1 mm. A learnable contrast module synthesizes {len(learned['start'])} weighted images through the physics "
        f"layer ({', '.join(p['sequence'] for p in learned['start'])}, started at the {', '.join(DEFAULT_PRESETS)} "
        "presets) whose parameters were trained jointly with a MONAI 2-D U-Net by the Dice+CE loss. "
        "Use: `syntheticmri segment --t1 T1 --t2 T2 --pd PD -o seg.nrrd`.",
        "",
        "## Intended use and limits",
        "",
        "- Research use on whole-brain adult T1/T2/PD maps (any grid: inputs are resampled to 1 mm and back). "
        "Not a medical device.",
        f"- Trained only on phantoms: every training subject is a diffeomorphic warp of one of "
        f"{len(anatomies)} anatomies ({', '.join(anatomies)}); the maps of every crop are drawn anew from its labels "
        "(tissue values, fields, texture, noise, resolution: the randomization below). `test` holds unseen warps of "
        "the same anatomies with the generator's own maps, `randomized` the same subjects with maps drawn as in "
        "training, `stress` with tissue values 10 % outside the training ranges and doubled map noise; `external` is "
        "another anatomy (IBSR) at 1.5 T with the generator's maps and is the honest estimate of generalization. The "
        "bundled sample is cvs_avg35 itself: a Dice on it is a regression check, not a generalization estimate. No "
        "real acquired maps were available offline.",
        "- `subcortical.pt` is the `learned` variant by design (the product's model is the learned contrast); the "
        "comparison below did not choose it.",
        "- Healthy anatomy only; lesions near the structures were not part of training.",
        "",
        "## Data and splits",
        "",
        *[_split_summary(split, info) for split, info in manifests.items()],
        "- Model selection on `val` only (mean Dice of its subjects with randomized maps, every "
        f"{config.steps // config.evaluations} steps); `test` and `external` were read once, after training.",
        "",
        "## Recipe",
        "",
        f"- U-Net: MONAI `UNet`, 2-D, channels {list(config.channels)}, strides 2, {config.num_res_units} residual "
        "units, 15 outputs; input: the 3 contrasts, each divided by its mean magnitude over the head voxels of the "
        "whole volume (one function, `SegmentationModel.scale`: at inference over the voxels, in training over the "
        "drawn tissue values weighted by their voxel counts in the crop's volume).",
        _randomization_line(Randomization()),
        f"- {config.steps} AdamW steps of {config.batch} crops of {config.crop}x{config.crop} axial pixels "
        f"({config.focus:.0%} centred on a structure), U-Net lr {config.lr:g} (5 % warm-up, cosine), physics lr "
        f"{config.physics_lr:g} on the unconstrained parameters (warm-up over {config.physics_warmup:.0%} of the run), "
        f"weight decay {config.weight_decay:g}, MONAI `DiceCELoss`, seed {config.seed}.",
        f"- Augmentation, applied to the synthesized images as a scanner would: Rician noise at SNR "
        f"{config.snr[0]:g}-{config.snr[1]:g} for a fully relaxed PD=1 signal (absolute, so a darker contrast is "
        f"noisier), smooth coil bias (log-sd {config.bias:g}), resolution loss {config.resolution_loss[0]:g}-"
        f"{config.resolution_loss[1]:g}x. The raw-maps baseline gets the randomized maps only (a coil bias cancels "
        "out of fitted maps; their noise and blur are the randomization's).",
        "- Baselines in the same run, same data order, steps and augmentation: "
        + (", ".join(f"`{name}` ({_BASELINES[name].format(seed=config.random_start_seed)})" for name in results if name in _BASELINES)
           or "none") + ".",
        f"- Trained by `syntheticmri train-seg` on {machine} ({device.type}, {threads} per variant): {minutes:.0f} min "
        "of training summed over the variants (validation included, test evaluation not).",
        "",
        "## Learned sequence parameters (selected model, step " + str(chosen["step"]) + ")",
        "",
        "| contrast | start (preset) | learned |",
        "|---|---|---|",
        *[f"| {k + 1} | {_caption(s)} | {_caption(e)} |" for k, (s, e) in enumerate(zip(learned["start"], chosen["protocols"]))],
        "",
        report.strip(),
        "",
        "![Dice per structure of every variant](dice.png)",
        "",
        "![training curves and parameter trajectories](training.png)",
        "",
        "## Files",
        "",
        *[f"- `{target}`, {(ship / target).stat().st_size / 2 ** 20:.1f} MiB, sha256 `{sha256(ship / target)}`"
          for target in files],
        "",
        "## Reproduce",
        "",
        "```",
        "syntheticmri phantom --fetch-sources",
        *[_phantom_command(split, info) for split, info in manifests.items() if info is not None],
        f"syntheticmri train-seg --data data -o runs/seg --steps {config.steps} --batch {config.batch} --crop {config.crop}",
        "cp -r runs/seg/model/* Resources/Models/",
        "```",
    ]
    card = ship / "MODEL_CARD.md"
    card.write_text("\n".join(lines) + "\n")
    return card


_BASELINES = {"fixed": "the presets T1w, T2w, T2-FLAIR, frozen", "maps": "no physics",
              "random": "the LCM from a random start, seed {seed}"}


def _randomization_line(r: Randomization) -> str:
    span = lambda pair, unit="": f"{pair[0]:g}-{pair[1]:g}{unit}"  # noqa: E731
    return (f"- Domain randomization of every crop's maps (`training/randomize.py`, sources there): field {' or '.join(f'{f:g} T' for f in r.fields)}"
            f" (the tissue table's values), then T1, T2, PD of all tissues x {span(r.subject_t1)}, {span(r.subject_t2)}, "
            f"{span(r.subject_pd)} (log-uniform; the mapping method and scanner) and of each tissue on its own x "
            f"{span(r.tissue_t1)}, {span(r.tissue_t2)}, {span(r.tissue_pd)}; T2 <= T1, PD <= 1; axial slices "
            f"{span(r.slice_mm, ' mm')} thick, in-plane voxels {span(r.in_plane_mm, ' mm')}, partial volume sigma "
            f"{span(r.pv_sigma_mm, ' mm')}; a smooth multiplicative field per map (log-sd {span(r.field_sd)}, knots every "
            f"{r.field_spacing_mm:g} mm), texture (sd {span(r.texture_sd)}), map noise (sd {span(r.noise)} of the value at "
            f"T1 1 s, T2 100 ms, PD 1, growing as the square root of the value: CSF is noisiest); "
            f"{r.brain_only:.0%} of draws skull-stripped.")


# --------------------------------------------------------------------------- the command


def _evaluate_once(folder: Path, digest: str, data: Path, device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    """Test and external scores of ``folder/best.pt`` (sha256 ``digest``). Its per-subject scores are kept in
    ``folder/evaluation.json`` with the digest: a later run (another variant list, a resumed run) summarizes them
    again instead of reading the test data again."""
    cache = folder / "evaluation.json"
    splits = evaluation_splits(data)
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["sha256"] == digest and saved["data"] == str(data.resolve()) and sorted(saved["subjects"]) == sorted(splits):
            log(f"{folder.name}: test scores of these weights already measured ({cache})")
            return {split: summarize(rows) for split, rows in saved["subjects"].items()}
    model = load_model(folder / "best.pt", device)
    evaluation = {}
    for split, (folder, randomization) in splits.items():
        evaluation[split] = evaluate_folder(model, folder, device, randomization=randomization)
        log(f"{model.config['variant']} {split}: mean Dice {evaluation[split]['mean_dice']:.3f}, "
            f"worst structure {evaluation[split]['min_structure_dice']:.3f}, HD95 {evaluation[split]['mean_hd95']:.2f} mm")
    rows = {split: scores["subjects"] for split, scores in evaluation.items()}
    cache.write_text(json.dumps({"sha256": digest, "data": str(data.resolve()), "subjects": rows}, indent=1))
    return evaluation


def check_splits(data: Path) -> None:
    """Refuse a data folder without its ``train``, ``val`` and ``test`` phantom folders."""
    for split in ("train", "val", "test"):
        if not has_manifest(data / split):
            raise InputError(f"{data / split}: no phantom folder; write it with syntheticmri phantom --split {split} -o {data / split}")


def train_command(data: PathLike, out: PathLike, variants: Sequence[str] = VARIANTS, config: Optional[TrainConfig] = None,
                  device: torch.device = torch.device("cpu"), resume: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train every variant on ``data/train``, select on ``data/val``, evaluate on ``data/test`` and ``data/external``."""
    config = config or TrainConfig()
    data, out = Path(data), Path(out)
    check_splits(data)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise InputError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    out.mkdir(parents=True, exist_ok=True)
    log(f"loading {data / 'train'} and {data / 'val'}")
    bank, validation = SliceBank(data / "train"), ValidationSet(data / "val")
    log(f"{bank.subjects} training subjects ({len(bank.with_structures)} slices with structures), "
        f"{len(validation.items)} validation subjects; device {device}")
    results: Dict[str, Dict[str, Any]] = {}
    for name in variants:
        history = train_variant(name, config, bank, validation, out, device, resume, log)
        digest = sha256(out / name / "best.pt")
        evaluation = _evaluate_once(out / name, digest, data, device, log)
        results[name] = {"history": history, "evaluation": evaluation, "weights": str(out / name / "best.pt"), "sha256": digest}
        (out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, out)
    if "learned" in results:
        card = write_model_card(results, data, out, config, device)
        missed = shipping_verdict(results["learned"]["evaluation"]["test"])
        if missed:
            log(f"not for shipping: {'; '.join(missed)} (the bar: {SHIP_BAR}); the card is at {card}")
        else:
            log(f"model to ship: {card.parent} (meets the bar {SHIP_BAR}; copy its files into Resources/Models)")
    log(f"report: {out / 'report.md'}, curves: {out / 'training.png'}")
    return results
