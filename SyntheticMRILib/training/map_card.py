"""The map estimator's model card (markdown) from a ``train-maps`` report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

__all__ = ["write_map_card", "split_table"]

_BAR = {"psnr": 34.0, "ssim": 0.92}  # the published method's figures, on every map
_WHAT = {
    "test": "internal test subjects (held-out anatomy draws, 3 T tissue values), protocols in the training ranges",
    "external": "IBSR anatomy at 1.5 T (never trained on), protocols in the training ranges",
    "lesions": "test subjects with lesions (MS, tumour with oedema, lacunes; never in training); err_lesion is the "
               "error of the lesion ROI mean",
    "out-of-range": "the test subjects at protocols with every TR/TE/TI up to 20 % beyond the training ranges",
}


def split_table(rows: Dict[str, Any]) -> List[str]:
    """One markdown table: a row per method, PSNR / SSIM / MAPE per map, the round trip and tissue errors."""
    groups = sorted({k[4:] for r in rows.values() for m in ("t1", "t2", "pd") for k in r[m] if k.startswith("err_")})
    head = ["method", "n"] + [f"{m.upper()} {k}" for m in ("t1", "t2", "pd") for k in ("PSNR", "SSIM", "MAPE %")] + \
        ["round trip PSNR"] + [f"{m.upper()} err {g} %" for g in groups for m in ("t1", "t2", "pd")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in rows.items():
        cells = [method, str(r["subjects"])]
        for m in ("t1", "t2", "pd"):
            cells += [f"{r[m]['psnr']:.1f}", f"{r[m]['ssim']:.3f}", f"{r[m]['mape']:.1f}"]
        cells.append(f"{r['round_trip_psnr']:.1f}")
        cells += [f"{r[m].get('err_' + g, float('nan')):+.1f}" for g in groups for m in ("t1", "t2", "pd")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_map_card(report: Dict[str, Any], path: Path) -> Path:
    config = report["config"]
    lines = [
        "# Model card: T1/T2/PD maps from routine T1w, T2w and FLAIR (`maps.pt`)",
        "",
        f"Shipped variant: **{report['chosen']}** (lowest validation map loss; "
        + ", ".join(f"{n} {v:.4f}" for n, v in report["val_loss"].items()) + "). "
        f"sha256 `{report['sha256']}`, {report['size_bytes'] / 1e6:.1f} MB (float16 weights).",
        "",
        "## Data and recipe",
        "",
        "Phantoms of `syntheticmri phantom` (healthy training subjects; lesions only in the `lesions` test set). "
        "Every training draw randomizes the tissue values (per-tissue and shared log-normal factors, smooth fields: "
        "`training/routine.py`), draws one protocol per series log-uniformly in the clinical ranges "
        f"({report['ranges']}; ms), acquires the series through the physics layer with a lower resolution "
        "(1-1.8 px), a smooth coil bias (sd 0.15 of log), Rician noise at SNR 20-100 and a receiver gain from "
        "0.1 to 1000 per series. Inputs are divided by each series' median over the head of the whole volume.",
        "",
        f"Recipe: {config['steps']} steps, batch {config['batch']}, {config['crop']}-pixel crops, AdamW lr {config['lr']} "
        f"(5 % warm-up, cosine decay), channels {config['channels']}, FiLM embedding {config['embedding']}, physics weight "
        f"{config['physics_weight']}, seed {config['seed']}; training took {report['training_s'] / 60:.0f} min "
        "for all variants on this machine's device.",
        "",
        "Reproduce (the phantoms, then the run; `--eval-limit` subjects per evaluation split):",
        "",
        "```bash",
        *report.get("data", []),
        f"syntheticmri train-maps --data phantoms -o runs/maps --steps {config['steps']} --batch {config['batch']} "
        f"--seed {config['seed']} --eval-limit {report.get('eval_limit', 3)}",
        "```",
        "",
        "## Results",
        "",
        "Methods: the variants trained in the same run on the same draws, and `voxel-fit` (per-voxel dictionary "
        "fit through the physics layer, gains calibrated on white matter at its literature values for the "
        "subject's field). PSNR and SSIM over the brain (intracranial tissue and CSF), data range = the true "
        "map's maximum there; MAPE over parenchyma; err = signed error of a tissue's mean, %. Round trip: the "
        "noise-free input series against the estimated maps re-synthesized at the input protocols (PSNR, dB).",
        "",
        f"Bar of the published method: PSNR > {_BAR['psnr']:g} dB and SSIM > {_BAR['ssim']:g} on every map.",
    ]
    for split, rows in report["tables"].items():
        lines += ["", f"### {split}", "", _WHAT.get(split, split) + ".", ""] + split_table(rows)
    lines += ["", "Loss curves: `loss.png`.", ""]
    path.write_text("\n".join(lines))
    return path
