"""The training recipes of the segmenter, the map estimator and re-parameterization, and their variants: plain data, no torch, so the command line can show
the defaults without loading the training stack."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

__all__ = ["TrainConfig", "ClaimConfig", "VARIANTS", "SHIP_BAR", "shipping_verdict", "MapTrainConfig", "MAP_VARIANTS", "REPARAM_ENGINES",
           "DIRECT_MODES", "ReparamTrainConfig"]

VARIANTS = ("learned", "fixed", "maps", "random")


@dataclass
class TrainConfig:
    """The recipe; every variant of a run shares it."""

    steps: int = 5000
    batch: int = 16
    crop: int = 96
    lr: float = 2e-3
    physics_lr: float = 0.02  # Adam step on the unconstrained (logit) parameters
    physics_warmup: float = 0.2  # share of the run over which the physics rate ramps up: the U-Net learns first
    weight_decay: float = 1e-4
    evaluations: int = 8  # validation passes (and checkpoints) over the run
    focus: float = 0.75  # share of crops centred on a structure (the rest anywhere in the head)
    snr: Tuple[float, float] = (80.0, 250.0)  # SNR of a fully relaxed PD=1 signal: T2w WM then has 15-40
    bias: float = 0.2
    resolution_loss: Tuple[float, float] = (1.0, 2.0)
    channels: Tuple[int, ...] = (16, 32, 64, 128, 256)  # 5 levels: a 3-D structure's context in a 2-D slice
    num_res_units: int = 2
    seed: int = 0
    random_start_seed: int = 1


def _claim_recipe() -> TrainConfig:
    # Smaller than the product's: about 50 trainings on 2 CPU cores. No model selection (one evaluation, the end).
    return TrainConfig(steps=800, channels=(16, 32, 64, 128), num_res_units=1, evaluations=1)


@dataclass
class ClaimConfig:
    """The learned-vs-fixed experiment (``syntheticmri claim-seg``): which K, noise levels, seeds and K = 1 TI grid."""

    contrasts: Tuple[int, ...] = (1, 2, 3)
    snr: Tuple[float, ...] = (30.0, 100.0)  # fully relaxed PD = 1 signal over the noise sigma: T2w WM at 3-6, 10-20
    seeds: Tuple[int, ...] = (0, 1, 2)
    grid_ti: Tuple[float, ...] = (300.0, 600.0, 900.0, 1300.0, 2000.0, 3000.0)
    grid_tr: float = 6000.0
    grid_te: float = 10.0
    train: TrainConfig = field(default_factory=_claim_recipe)


# What a segmenter must reach on `test` before train-seg recommends shipping it (the bar of the issue that asked
# for the model, and of its model card): mean Dice over the 14 structures, and the worst structure's mean Dice.
SHIP_BAR = {"mean_dice": 0.85, "min_structure_dice": 0.70}


def shipping_verdict(test_scores: dict) -> List[str]:
    """What keeps a model with these ``test`` scores (``mean_dice``, ``min_structure_dice``) from shipping: one
    line per missed bar, an empty list when it meets :data:`SHIP_BAR`."""
    return [f"test {key.replace('_', ' ')} {test_scores[key]:.3f} < {bar:.2f}"
            for key, bar in SHIP_BAR.items() if not test_scores[key] >= bar]


MAP_VARIANTS = ("film", "film-2.5d", "no-embedding", "no-physics")


@dataclass
class MapTrainConfig:
    """The recipe every variant of a run shares."""

    steps: int = 1200
    batch: int = 8
    crop: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-5
    physics_weight: float = 0.5
    channels: Tuple[int, ...] = (16, 32, 64, 128)
    embedding: int = 64
    evaluations: int = 6
    seed: int = 0


REPARAM_ENGINES = ("physics", "direct")
DIRECT_MODES = ("default", "param")  # the direct engine's two models: input always at SE 4500/50, or any input


@dataclass
class ReparamTrainConfig:
    """The recipe of both re-parameterization engines (same data draws, steps and batch)."""

    steps: int = 3000
    batch: int = 8
    crop: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-5
    physics_weight: float = 0.5  # the re-synthesized input must match the input (physics engine)
    target_weight: float = 1.0  # the re-synthesized target must match the target (physics engine)
    channels: Tuple[int, ...] = (16, 32, 64, 128)  # physics engine (a MapNet)
    embedding: int = 64
    direct_channels: Tuple[int, ...] = (24, 48, 96, 192, 192)  # 5 stride-2 levels: a 96-px crop ends at 3x3
    direct_range: float = 10.0  # the direct engine's output ceiling, in medians of the input over the head
    evaluations: int = 6
    seed: int = 0
