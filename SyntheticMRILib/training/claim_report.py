"""The claim experiment's table, figure and reading (``claim.md``, ``claim.png``, ``claim.json``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from .config import ClaimConfig
from .claim_stats import sign_flip_p

__all__ = ["write_claim_report", "compare"]


def compare(results: List[Dict[str, Any]], k: int, snr: float, label: str) -> Dict[str, Any]:
    """Learned vs fixed at one (K, SNR, preset set): mean +- sd over seeds, the paired difference and its p."""
    rows = {kind: sorted((r for r in results if r["kind"] == kind and r["k"] == k and r["snr"] == snr and r["label"] == label),
                         key=lambda r: r["seed"]) for kind in ("fixed", "learned")}
    seeds = sorted({r["seed"] for r in rows["fixed"]} & {r["seed"] for r in rows["learned"]})
    pick = {kind: [next(r for r in rows[kind] if r["seed"] == s) for s in seeds] for kind in rows}
    means = {kind: np.array([np.mean(r["test"]) for r in pick[kind]]) for kind in pick}
    per_subject = {kind: np.mean([r["test"] for r in pick[kind]], axis=0) for kind in pick}  # seed-averaged
    difference = per_subject["learned"] - per_subject["fixed"]
    return {"k": k, "snr": snr, "fixed_set": label, "seeds": seeds,
            "fixed": [float(means["fixed"].mean()), float(means["fixed"].std(ddof=1)) if len(seeds) > 1 else 0.0],
            "learned": [float(means["learned"].mean()), float(means["learned"].std(ddof=1)) if len(seeds) > 1 else 0.0],
            "difference": [float((means["learned"] - means["fixed"]).mean()),
                           float((means["learned"] - means["fixed"]).std(ddof=1)) if len(seeds) > 1 else 0.0],
            "subjects": len(difference), "p": sign_flip_p(difference),
            "learned_protocols": pick["learned"][0]["protocols"]}


def _pm(pair: List[float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def write_claim_report(results: List[Dict[str, Any]], best: Dict[Tuple[int, float], str], claim: ClaimConfig,
                       out: Path) -> Dict[str, Any]:
    unique = list({(r["kind"], r["label"], r["snr"], r["seed"]): r for r in results}.values())
    table = [compare(unique, k, snr, best[(k, snr)]) for k in claim.contrasts for snr in claim.snr]
    lines = ["# Learned vs fixed contrasts: the claim experiment", "",
             f"{claim.train.steps} steps per model, U-Net channels {list(claim.train.channels)}, seeds {list(claim.seeds)}; "
             "noise: Rician at the given SNR of a fully relaxed PD = 1 signal, in training and evaluation; scores: the "
             "mean over `test` subjects of each subject's mean Dice over the 14 structures; p: exact sign-flip test of "
             "the seed-averaged per-subject differences.", "",
             "| K | SNR | best fixed set (on val) | fixed | learned | learned - fixed | p (subjects) | learned protocols (seed 0) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['k']} | {row['snr']:g} | {row['fixed_set']} | {_pm(row['fixed'])} | {_pm(row['learned'])} | "
                     f"{row['difference'][0]:+.3f} ± {row['difference'][1]:.3f} | {row['p']:.3f} ({row['subjects']}) | "
                     f"{'; '.join(row['learned_protocols'])} |")
    lines += ["", "## Every fixed candidate and the K = 1 inversion-recovery grid (seed 0)", "",
              "| K | SNR | contrasts | val | test |", "|---|---|---|---|---|"]
    for r in sorted((r for r in unique if r["kind"] in ("fixed", "grid") and r["seed"] == 0), key=lambda r: (r["k"], r["snr"], r["kind"], r["label"])):
        lines.append(f"| {r['k']} | {r['snr']:g} | {'; '.join(r['protocols'])} | {np.mean(r['val']):.3f} | {np.mean(r['test']):.3f} |")
    lines += ["", "![Dice over the K = 1 TI grid, with the fixed and learned models](claim.png)", ""]
    (out / "claim.md").write_text("\n".join(lines) + "\n")
    report = {"table": table, "runs": unique}
    (out / "claim.json").write_text(json.dumps(report, indent=1))
    _plot(unique, table, claim, out / "claim.png")
    return report


def _plot(results: List[Dict[str, Any]], table: List[Dict[str, Any]], claim: ClaimConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(claim.snr), figsize=(5.5 * len(claim.snr), 4), squeeze=False)
    for axis, snr in zip(axes[0], claim.snr):
        points = sorted((float(r["label"][2:]), np.mean(r["test"])) for r in results if r["kind"] == "grid" and r["snr"] == snr)
        if points:
            axis.plot(*zip(*points), "o-", color="k", label="fixed IR, TI grid")
        for row in (r for r in table if r["snr"] == snr and r["k"] == 1):
            for n, kind in enumerate(("fixed", "learned")):
                mean, sd = row[kind]
                axis.axhspan(mean - sd, mean + sd, color=f"C{n}", alpha=0.25)
                axis.axhline(mean, color=f"C{n}", label=f"{kind} K=1 ({row['fixed_set']})")
        axis.set(xscale="log", xlabel="TI (ms)", ylabel="test mean Dice", title=f"K = 1, SNR {snr:g}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
