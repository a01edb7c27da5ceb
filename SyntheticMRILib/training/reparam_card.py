"""The re-parameterization model card (markdown) from a ``train-reparam`` report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from .reparam_eval import TARGETS, table_lines, target_lines

__all__ = ["write_reparam_card", "BAR"]

BAR = {"se": 7.0, "ir": 10.0}  # the physics engine's goal on `external`: MAE (0-255, head) per SE / IR target
_WHAT = {
    "test": "internal test subjects (held-out anatomy draws, 3 T tissue values)",
    "external": "IBSR anatomy at 1.5 T (never trained on)",
    "lesions": "test subjects with lesions (MS, tumour with oedema, lacunes; never in training)",
    "out-of-range": "the test subjects at targets with one TR/TE/TI up to 20 % beyond the ranges",
}


def bar_verdict(tables: Dict[str, Any]) -> str:
    """Whether the physics engine meets :data:`BAR` on `external` for every target (param mode)."""
    rows = tables.get("external", {}).get("param", {}).get("physics")
    if rows is None:
        return "not evaluated on `external`"
    misses = [f"{name} {scores['mae']:.1f}" for name, scores in rows["targets"].items()
              if scores["mae"] > BAR["ir" if " IR " in f" {name} " else "se"]]
    return "met on every target" if not misses else "missed on " + ", ".join(misses)


def write_reparam_card(report: Dict[str, Any], path: Path) -> Path:
    config = report["config"]
    files = report.get("files", {})
    lines = [
        "# Model card: re-parameterization (`physics.pt`, `direct.pt`)",
        "",
        "One weighted scan (SE or IR) and its protocol -> the same anatomy at another TR/TE/TI. "
        + "; ".join(f"`{n}.pt` sha256 `{f['sha256']}`, {f['bytes'] / 1e6:.1f} MB (float16)" for n, f in files.items()) + ".",
        "",
        "* **physics**: a FiLM U-Net (the map estimator's design: MONAI residual units, 2.5-D, the scan's log-scaled "
        "TR/TE/TI and sequence as embedding, input over its head median) predicts T1/T2/PD; the physics layer "
        "synthesizes the target at the gain that fits the input; the input's residual (what the maps do not explain) "
        "is carried over scaled by (S_target + f)/(S_input + f) capped at 1 (f a tenth of the input's median: noise is "
        "attenuated with the signal, never amplified; S_target/(S_input + f) for a signed PSIR, no residual for a "
        "dSIR ratio), so the input protocol returns the input. `physics-smooth`: the "
        "same maps without the residual.",
        "* **direct**: the published architecture (encoder; coarse-to-fine param net with the parameters as constant "
        f"channels; instance norm, LeakyReLU 0.2, tanh), {len(config['direct_channels'])} levels (the published 8 reach "
        "1x1 at 256 px, where instance norm is undefined; our 96-px crops end at 3x3), parameters log-scaled with TI "
        "and the sequence added. Modes: `default` (input always SE 4500/50) and `param` (input and target given); "
        "`direct.pt` is the `param` model.",
        "",
        "## Data and recipe",
        "",
        "Phantoms of `syntheticmri phantom` (healthy training subjects; lesions only in the `lesions` set). Every "
        "draw randomizes the tissue values (per-tissue and shared log-normal factors, smooth fields), draws input and "
        f"target protocols log-uniformly in the clinical ranges ({report['ranges']}; ms; IR with TR >= 2.5 TI), acquires "
        "the input with a lower resolution (1-1.8 px), a smooth coil bias, Rician noise at SNR 20-100 and a gain "
        "0.1-1000; the target is the same scanner's image (same gain, bias, resolution), noise-free.",
        "",
        f"Recipe (both engines, same draws): {config['steps']} steps per model, batch {config['batch']}, "
        f"{config['crop']}-px crops, AdamW lr {config['lr']} (warm-up, cosine), seed {config['seed']}. physics: channels "
        f"{config['channels']}, embedding {config['embedding']}, loss = target L1 + map L1 + {config['physics_weight']} x "
        f"input consistency; direct: channels {config['direct_channels']}, L1 over the crop, output range "
        f"{config['direct_range']:g} input medians. Training time: "
        + ", ".join(f"{e} {t['seconds'] / 60:.0f} min" for e, t in report["trained"].items()) + " (2 CPU cores).",
        "",
        "Reproduce:",
        "",
        "```bash",
        *report.get("data", []),
        f"syntheticmri train-reparam --data phantoms -o runs/reparam --steps {config['steps']} --batch {config['batch']} "
        f"--seed {config['seed']} --eval-limit {report['eval_limit']}",
        "```",
        "",
        "## Results",
        "",
        "Each image scaled by its own 99.5th percentile over the head to 0-255 (as the published 8-bit images), "
        "clipped. MAE SE / MAE IR: mean absolute error over the head, mean over the SE (IR) targets and subjects; "
        "PSNR (peak 255), SSIM over the head; MAE image: over the whole image, background included (the published "
        "method's own figure: MRiLab 4.8-8.6, BrainWeb 20.5-31.6, SE only). Targets: "
        + ", ".join(TARGETS) + ", and two random SE and two random IR targets per subject (out-of-range: four "
        "targets beyond the ranges). Subjects per split: "
        + ", ".join(f"{s} {t['subjects']}" for s, t in report["tables"].items()) + ".",
        "",
        *table_lines({s: t for s, t in report["tables"].items()}),
        "",
        f"Goal (physics engine, `external`, param mode): MAE <= {BAR['se']:g} per SE target and <= {BAR['ir']:g} per "
        f"IR target: **{bar_verdict(report['tables'])}**.",
    ]
    for split in report["tables"]:
        lines += ["", f"### {split}, per target (param mode)", "", _WHAT.get(split, split) + ".", ""]
        lines += target_lines(report["tables"], split)
    lines += ["", "Figure `examples.png`: input, target truth, both engines and their errors for four targets and "
              "DIR (physics only). Loss curves: `loss.png`.", ""]
    path.write_text("\n".join(lines))
    return path
