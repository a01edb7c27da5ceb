"""The headline claim, tested where it can matter: does learning TR/TE/TI segment better than the best fixed clinical
contrasts?

With three contrasts and no noise a U-Net can undo any contrast choice, so the question is asked with K = 1, 2 and
3 contrasts and with noise as an acquisition has it: Rician, at a fixed level relative to a fully relaxed PD = 1
signal (so a nulled, dark contrast is noisier than a short-TE, long-TR one), in training and in evaluation alike.
For each K and noise level, in one run on the same data and steps:

* ``fixed``: the best set of K presets among :data:`DEFAULT_PRESETS` (every combination trained once, seed 0, and
  the best on ``val`` kept), then trained with every seed;
* ``learned``: the learnable contrast module started from that same set, every seed;
* for K = 1, a grid of fixed inversion-recovery TIs (seed 0): the Dice curve on which the learned parameter sits.

Scores are each ``test`` subject's mean Dice over the 14 structures under a noise draw that is the same for every
model (seeded by subject). Reported: mean +- sd over seeds of the subject-mean Dice, the paired difference
learned - fixed, and an exact sign-flip test over subjects (seed-averaged). Runs are cached in their folders, so
the command resumes, and separate processes (e.g. one per noise level) meet in one report.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .augment import scanner_effects
from .claim_report import write_claim_report
from .config import ClaimConfig, TrainConfig
from .segmenter import (SliceBank, ValidationSet, _classes, _structure_dice, _subject_files, check_splits, contrast_model,
                        train_variant)
from ..io.maps import load_maps
from ..io.volumes import read_volume
from ..models.contrast import DEFAULT_PRESETS, LearnableContrast
from ..models.segmenter import SegmentationModel, load_model, predict_classes
from ..physics.protocols import Protocol, preset

__all__ = ["Run", "candidates", "grid", "plan_runs", "subject_scores", "claim_command"]


class Run:
    """One training of the experiment: K contrasts (protocols), learnable or fixed, a noise level and a seed."""

    def __init__(self, kind: str, label: str, protocols: Sequence[Protocol], learnable: bool, snr: float, seed: int):
        self.kind, self.label, self.protocols, self.learnable, self.snr, self.seed = kind, label, list(protocols), learnable, snr, seed

    @property
    def k(self) -> int:
        return len(self.protocols)

    @property
    def name(self) -> str:
        return f"K{self.k}-{self.kind}-{self.label}-snr{self.snr:g}-seed{self.seed}"

    def model(self, config: TrainConfig) -> SegmentationModel:
        torch.manual_seed(self.seed)
        contrast = LearnableContrast([p.sequence for p in self.protocols], self.protocols, learnable=self.learnable)
        return contrast_model(self.kind, config, contrast)


def _presets(names: Sequence[str]) -> List[Protocol]:
    return [preset(name).protocol for name in names]


def candidates(k: int, snr: float) -> List[Run]:
    """Every set of ``k`` presets, fixed, seed 0: the pool the best fixed choice is picked from on ``val``."""
    return [Run("fixed", "+".join(names), _presets(names), False, snr, 0) for names in itertools.combinations(DEFAULT_PRESETS, k)]


def grid(claim: ClaimConfig, snr: float) -> List[Run]:
    """K = 1: fixed inversion recoveries over :attr:`ClaimConfig.grid_ti` (seed 0)."""
    return [Run("grid", f"TI{ti:g}", [Protocol("ir", tr=claim.grid_tr, te=claim.grid_te, ti=ti)], False, snr, 0)
            for ti in claim.grid_ti]


def plan_runs(claim: ClaimConfig, best: Dict[Tuple[int, float], str]) -> List[Run]:
    """The seeded runs once the best fixed preset set of each (K, SNR) is known (``best``: label like ``T1w+T2w``)."""
    runs = []
    for k in claim.contrasts:
        for snr in claim.snr:
            names = best[(k, snr)].split("+")
            for seed in claim.seeds:
                runs.append(Run("fixed", best[(k, snr)], _presets(names), False, snr, seed))
                runs.append(Run("learned", best[(k, snr)], _presets(names), True, snr, seed))
    return runs


def _noisy(snr: float, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return lambda x: scanner_effects(x, generator, snr=None, sigma=1.0 / snr, bias=0.0, resolution_loss=1.0)


def subject_scores(model: SegmentationModel, folder: Path, snr: float, device: torch.device) -> List[float]:
    """Each subject's mean Dice over the 14 structures, its contrasts acquired at ``snr`` (the noise seeded by the
    subject's position, the same for every model)."""
    scores = []
    for n, files in enumerate(_subject_files(folder)):
        maps = load_maps(files["t1"], files["t2"], files["pd"])
        with torch.no_grad():
            predicted = predict_classes(model, maps.t1, maps.t2, maps.pd, device=device, scanner=_noisy(snr, 7000 + n))
        truth = _classes(read_volume(files["labels"]).array)
        scores.append(float(np.mean(_structure_dice(predicted, truth))))
    return scores


def _train_and_score(run: Run, claim: ClaimConfig, bank: SliceBank, validation: ValidationSet, data: Path, out: Path,
                     device: torch.device, log: Callable[[str], None]) -> Dict[str, Any]:
    cache = out / run.name / "scores.json"
    config = replace(claim.train, snr=(run.snr, run.snr), seed=run.seed)
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["config"] == json.loads(json.dumps(asdict(config))):  # as JSON stores it (tuples become lists)
            return saved
    train_variant(run.name, config, bank, validation, out, device, log=log, model=run.model(config))
    model = load_model(out / run.name / "best.pt", device)
    result = {"config": asdict(config), "kind": run.kind, "label": run.label, "k": run.k, "snr": run.snr, "seed": run.seed,
              "protocols": [f"{p.sequence} {p.caption()}" for p in model.contrast.protocols()],
              "val": subject_scores(model, data / "val", run.snr, device),
              "test": subject_scores(model, data / "test", run.snr, device)}
    cache.write_text(json.dumps(result, indent=1))
    log(f"{run.name}: val {np.mean(result['val']):.3f}, test {np.mean(result['test']):.3f} | {'; '.join(result['protocols'])}")
    return result


def claim_command(data: Path, out: Path, claim: Optional[ClaimConfig] = None, device: torch.device = torch.device("cpu"),
                  log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run (or resume) the experiment and write ``claim.md``, ``claim.json`` and ``claim.png`` into ``out``."""
    claim = claim or ClaimConfig()
    data, out = Path(data), Path(out)
    check_splits(data)
    out.mkdir(parents=True, exist_ok=True)
    bank, validation = SliceBank(data / "train"), ValidationSet(data / "val")
    done: List[Dict[str, Any]] = []
    best: Dict[Tuple[int, float], str] = {}
    for k in claim.contrasts:
        for snr in claim.snr:
            pool = [_train_and_score(run, claim, bank, validation, data, out, device, log) for run in candidates(k, snr)]
            best[(k, snr)] = max(pool, key=lambda r: np.mean(r["val"]))["label"]
            done += pool
            if k == 1:
                done += [_train_and_score(run, claim, bank, validation, data, out, device, log) for run in grid(claim, snr)]
    done += [_train_and_score(run, claim, bank, validation, data, out, device, log) for run in plan_runs(claim, best)]
    return write_claim_report(done, best, claim, out)
