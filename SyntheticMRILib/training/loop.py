"""The training loop the map estimator and both re-parameterization engines share: AdamW, a learning rate that
is a function of the step alone (warm-up, cosine decay), gradient clipping, a validation pass and a checkpoint
every ``steps // evaluations`` steps, the best weights kept, and resumption of a cut-off run. Batches are drawn
from a generator seeded by the step of the last checkpoint, so a resumed run draws what the uncut run drew."""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models.mapper import save_mapper

__all__ = ["learning_rate", "train_network", "loss_figure"]


def check_resumable(saved: Dict[str, Any], config: Any, step: int, checkpoint: Path) -> None:
    """A checkpoint continues only the run it belongs to: the same recipe, at most a longer one."""
    now = asdict(config)
    changed = [k for k in now if k not in ("steps", "evaluations") and saved.get(k) != now[k]
               and not (isinstance(now[k], tuple) and list(now[k]) == saved.get(k))]
    if changed:
        raise InputError(f"{checkpoint} was trained with another recipe ({', '.join(f'{k} {saved.get(k)}' for k in changed)});"
                         " choose another -o or pass --overwrite to start over")
    if config.steps < step:
        raise InputError(f"{checkpoint} is at step {step}, past --steps {config.steps}; choose another -o or --overwrite")


def learning_rate(step: int, config: Any) -> float:
    """Linear warm-up over the first 5 % of the steps, then a cosine decay to 1 % of ``config.lr``."""
    warmup = max(1, config.steps // 20)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_network(name: str, model: nn.Module, draw: Callable[[np.random.Generator], Dict[str, Any]],
                  loss: Callable[[nn.Module, Dict[str, Any]], Tuple[torch.Tensor, Dict[str, float]]],
                  validate: Callable[[nn.Module], float], config: Any, out: Path,
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train ``model`` (resuming ``out/<name>.ckpt``) on batches ``draw(rng)`` under ``loss(model, batch)``
    (whose parts' first entry is the curve's second column); keep the weights of the lowest ``validate(model)``
    (run in eval mode) in ``out/<name>.pt``. ``config``: a recipe dataclass with ``steps``, ``evaluations``,
    ``lr``, ``weight_decay`` and ``seed``. Returns the curves, the best validation value and the training time
    (s, all resumed parts, validation included)."""
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    checkpoint = out / f"{name}.ckpt"
    state = {"step": 0, "curve": [], "val": [], "best": math.inf, "seconds": 0.0}
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        check_resumable(saved.get("config", {}), config, saved["state"]["step"], checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        log(f"{name}: resuming at step {state['step']}")
    rng = np.random.default_rng([config.seed, state["step"]])  # the same draws for every variant
    every = max(1, config.steps // config.evaluations)
    started = time.perf_counter() - state.get("seconds", 0.0)  # training time over every resumed part
    model.train()
    bar = tqdm(total=config.steps, initial=state["step"], desc=name, unit="step")
    while state["step"] < config.steps:
        value, parts = loss(model, draw(rng))
        for group in optimizer.param_groups:  # a function of the step alone: a resumed (or lengthened) run continues it
            group["lr"] = learning_rate(state["step"], config)
        optimizer.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state["step"] += 1
        state["curve"].append([state["step"], value.item(), next(iter(parts.values()))])
        bar.update(1)
        bar.set_postfix(loss=f"{value.item():.3f}")
        if state["step"] % every == 0 or state["step"] == config.steps:
            model.eval()
            with torch.no_grad():
                score = float(validate(model))
            model.train()
            state["val"].append([state["step"], score])
            state["seconds"] = time.perf_counter() - started
            if score < state["best"]:
                state["best"] = score
                save_mapper(model, out / f"{name}.pt", {"variant": name, "step": state["step"], "val_loss": score})
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                        "config": asdict(config)}, checkpoint)
            log(f"{name}: step {state['step']} validation {score:.4f}")
            rng = np.random.default_rng([config.seed, state["step"]])  # resumable: draws depend on the step only
    bar.close()
    return {"curve": state["curve"], "val": state["val"], "best_val": state["best"], "seconds": state.get("seconds", 0.0)}


def loss_figure(runs: Dict[str, Dict[str, Any]], path: Path, what: str) -> None:
    """Training curves (moving mean of the curve's second column) and validation values of each run, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        curve = np.array(run["curve"])
        if len(curve):
            k = max(1, len(curve) // 50)
            axes[0].plot(curve[k - 1:, 0], np.convolve(curve[:, 2], np.ones(k) / k, mode="valid"), label=name)
        val = np.array(run["val"])
        if len(val):
            axes[1].plot(val[:, 0], val[:, 1], marker="o", label=name)
    axes[0].set(title=f"training {what} (moving mean)", xlabel="step", yscale="log")
    axes[1].set(title=f"validation {what}", xlabel="step")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
