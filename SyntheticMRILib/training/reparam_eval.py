"""Evaluating re-parameterization: both engines, both modes, one table; the example figure; the model card.

Each evaluated subject is acquired once per mode (``default``: at SE 4500/50; ``param``: at a protocol drawn
in the ranges, seeded by the subject) with the training's scanner effects, and re-parameterized to the named
targets of :data:`TARGETS` and two random SE and two random IR targets (``out-of-range``: four targets with
one value up to 20 % beyond the ranges). The truth is the same scanner's image at the target: the same gain,
bias and resolution, no noise. Metrics (as the published method's 8-bit images): each image scaled by its own
99.5th percentile over the head to 0-255 and clipped; MAE over the head, PSNR (peak 255) and SSIM over the
head, and the published method's own figure, the MAE over the whole image, background included.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .map_metrics import ssim
from .mapper import _subjects
from .routine import ScanAcquisition
from ..io.volumes import read_volume
from ..models.reparam import ScanMaps, predict_direct, predict_scan_maps
from ..phantoms.manifest import has_manifest
from ..physics.protocols import Protocol, preset
from ..physics.scans import DEFAULT_INPUT, draw_scan

__all__ = ["TARGETS", "image_scores", "evaluate_engines", "example_figure"]

TARGETS: Dict[str, Protocol] = {
    "T1w SE 500/15": Protocol("se", 500.0, 15.0),
    "PDw SE 3000/15": Protocol("se", 3000.0, 15.0),
    "T2w SE 5000/100": Protocol("se", 5000.0, 100.0),
    "FLAIR IR 9000/100/2500": Protocol("ir", 9000.0, 100.0, 2500.0),
    "STIR IR 4000/40/180": Protocol("ir", 4000.0, 40.0, 180.0),
}
MODES = {"default": "direct-default", "param": "direct-param"}  # the direct model of each mode
_SPLITS = {"test": ("test", False, False), "external": ("external", False, False),
           "lesions": ("lesions", False, True), "out-of-range": ("test", True, False)}


def to_255(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """``image`` over its 99.5th percentile in ``head``, x 255, clipped to [0, 255] (an 8-bit display's scale)."""
    top = float(np.percentile(image[head], 99.5))
    return np.clip(image / max(top, 1e-12) * 255.0, 0, 255).astype(np.float32)


def image_scores(predicted: np.ndarray, truth: np.ndarray, head: np.ndarray, roi: Any = None) -> Dict[str, float]:
    """``mae`` (head), ``psnr`` (head, peak 255), ``ssim`` (head), ``mae_image`` (whole image) on the 0-255 scale;
    ``mae_roi`` over ``roi`` when given."""
    a, b = to_255(predicted, head), to_255(truth, head)
    mse = float(np.mean((a[head] - b[head]) ** 2))
    out = {"mae": float(np.mean(np.abs(a[head] - b[head]))), "psnr": 10 * np.log10(255.0 ** 2 / max(mse, 1e-12)),
           "ssim": ssim(a, b, head), "mae_image": float(np.mean(np.abs(a - b)))}
    if roi is not None and roi.any():
        out["mae_roi"] = float(np.mean(np.abs(a[roi] - b[roi])))
    return out


def _targets(rng: np.random.Generator, outside: bool) -> Dict[str, Protocol]:
    drawn = {f"random {s.upper()} {k + 1}": draw_scan(rng, s, outside) for s in ("se", "ir") for k in range(2)}
    return drawn if outside else {**TARGETS, **drawn}


def evaluation_case(record: Dict[str, Any], mode: str, seed: int, outside: bool) -> Dict[str, Any]:
    """A subject's truth maps, its input scan in ``mode`` and the targets (all seeded by the subject)."""
    files = record["files"]
    grid = read_volume(files["t1"])
    truth = torch.from_numpy(np.stack([grid.array.astype(np.float32)] +
                                      [read_volume(files[m]).array.astype(np.float32) for m in ("t2", "pd")]))
    labels = read_volume(files["labels"]).array
    rng = np.random.default_rng([seed, zlib.crc32(record["id"].encode()), list(MODES).index(mode)])
    protocol = DEFAULT_INPUT if mode == "default" else draw_scan(rng)
    acquisition = ScanAcquisition(rng)
    image = acquisition.image(truth, protocol, spatial_dims=3).numpy()
    return {"id": record["id"], "grid": grid, "truth": truth, "labels": labels, "protocol": protocol,
            "acquisition": acquisition, "image": grid.with_array(image), "targets": _targets(rng, outside),
            "lesions": read_volume(files["lesions"]).array.astype(bool) if "lesions" in files else None}


def target_truth(case: Dict[str, Any], target: Protocol) -> np.ndarray:
    return case["acquisition"].image(case["truth"], target, noise=False, spatial_dims=3).numpy()


def predictions(case: Dict[str, Any], models: Dict[str, torch.nn.Module], mode: str, device: torch.device,
                maps: Optional[ScanMaps], target: Protocol) -> Dict[str, np.ndarray]:
    """Each engine's image of ``case`` at ``target`` (``maps``: the physics engine's, ``None`` without it)."""
    out = {} if maps is None else {"physics": maps.render(target), "physics-smooth": maps.render(target, detail=False)}
    direct = models.get(MODES[mode])
    if direct is not None and target.sequence in ("se", "ir"):
        out["direct"] = predict_direct(direct, case["image"], case["protocol"], target, device)
    return out


def evaluate_engines(data: Path, models: Dict[str, torch.nn.Module], device: torch.device, seed: int, limit: int,
                     log: Callable[[str], None] = print) -> Dict[str, Any]:
    """``{split: {mode: {method: {"se": scores, "ir": scores, "targets": {name: scores}}}}}``, means over subjects
    and targets (``se``/``ir``: the targets of that sequence)."""
    tables: Dict[str, Any] = {}
    for split, (folder, outside, lesions_only) in _SPLITS.items():
        if not has_manifest(data / folder):
            log(f"{split}: {data / folder} not there; skipped")
            continue
        records = [r for r in _subjects(data / folder) if r["lesion"] or not lesions_only][:limit]
        rows: Dict[str, Dict[str, Dict[str, List[Dict[str, float]]]]] = {}
        for record in records:
            for mode in MODES:
                case = evaluation_case(record, mode, seed, outside)
                head = case["labels"] > 0
                maps = predict_scan_maps(case["image"], case["protocol"], models["physics"], device) \
                    if "physics" in models else None
                for name, target in case["targets"].items():
                    truth = target_truth(case, target)
                    for method, image in predictions(case, models, mode, device, maps, target).items():
                        scores = image_scores(image, truth, head, case["lesions"])
                        rows.setdefault(mode, {}).setdefault(method, {}).setdefault(name, []).append(scores)
            log(f"{split} {record['id']}: " + ", ".join(
                f"{mode} {m} MAE {np.mean([s['mae'] for v in rows[mode][m].values() for s in v]):.1f}"
                for mode in rows for m in rows[mode]))
        tables[split] = {mode: {method: _summary(by_target) for method, by_target in methods.items()}
                         for mode, methods in rows.items()}
        tables[split]["subjects"] = len(records)
    return tables


def _mean(rows: List[Dict[str, float]]) -> Dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def _summary(by_target: Dict[str, List[Dict[str, float]]]) -> Dict[str, Any]:
    """Means over subjects per target; then over the SE and the IR targets (named ones by their sequence; random
    ones by their label)."""
    per_target = {name: _mean(rows) for name, rows in by_target.items()}
    out: Dict[str, Any] = {"targets": per_target}
    for sequence in ("se", "ir"):
        names = [n for n in per_target if f" {sequence.upper()} " in f" {n} "]
        if names:
            out[sequence] = _mean([per_target[n] for n in names])
    return out


# --------------------------------------------------------------------------- figure and card


def example_figure(data: Path, models: Dict[str, torch.nn.Module], device: torch.device, seed: int, path: Path) -> None:
    """Input, target truth, both engines' predictions and their error maps for four targets (and DIR, which only
    the physics engine makes), one `external` subject (else `test`), param mode, the middle axial slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = data / "external" if has_manifest(data / "external") else data / "test"
    case = evaluation_case(_subjects(folder)[0], "param", seed, False)
    maps = predict_scan_maps(case["image"], case["protocol"], models["physics"], device)
    head = case["labels"] > 0
    k = int(np.mean(np.nonzero(head.any((1, 2)))[0]))
    targets = {name: TARGETS[name] for name in list(TARGETS)[:4]}
    targets["DIR (preset)"] = preset("DIR").protocol
    rows = ["truth", "physics", "direct", "|physics - truth|", "|direct - truth|"]
    fig, axes = plt.subplots(len(rows), len(targets) + 1, figsize=(2.3 * (len(targets) + 1), 2.4 * len(rows)))
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(to_255(case["image"].array, head)[k], cmap="gray", vmin=0, vmax=255)
    axes[0, 0].set_title(f"input {case['protocol'].sequence.upper()}\n{case['protocol'].caption()}", fontsize=8)
    for column, (name, target) in enumerate(targets.items(), start=1):
        truth = to_255(target_truth(case, target), head)
        found = {m: to_255(v, head) for m, v in predictions(case, models, "param", device, maps, target).items()}
        images = {"truth": truth, "physics": found["physics"], "direct": found.get("direct")}
        for row, label in enumerate(rows):
            source = images.get(label) if not label.startswith("|") else found.get(label.split()[0][1:])
            if source is None:
                continue
            picture = np.abs(source - truth)[k] if label.startswith("|") else source[k]
            axes[row, column].imshow(picture, cmap="magma" if label.startswith("|") else "gray", vmin=0,
                                     vmax=64 if label.startswith("|") else 255)
            title = f"{name}\n{label}" if row == 0 else label
            if label.startswith("|"):
                title += f" (MAE {np.mean(np.abs(source - truth)[head]):.1f})"
            axes[row, column].set_title(title, fontsize=8)
    fig.suptitle(f"{case['id']}: one scan re-parameterized (0-255 per image; errors 0-64)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table_lines(tables: Dict[str, Any]) -> List[str]:
    """The one table: a row per engine x mode, per split MAE of the SE and the IR targets (head), PSNR, SSIM and the
    whole-image MAE (the published method's figure)."""
    splits = [s for s in tables]
    head = ["engine", "mode"] + [f"{s} {c}" for s in splits for c in ("MAE SE", "MAE IR", "PSNR", "SSIM", "MAE image")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode in MODES:
        for method in ("physics", "physics-smooth", "direct"):
            cells = [method, mode]
            for split in splits:
                row = tables[split].get(mode, {}).get(method)
                if row is None:
                    cells += ["-"] * 5
                    continue
                both = _mean([row[s] for s in ("se", "ir") if s in row])
                cells += [f"{row['se']['mae']:.1f}" if "se" in row else "-", f"{row['ir']['mae']:.1f}" if "ir" in row else "-",
                          f"{both['psnr']:.1f}", f"{both['ssim']:.3f}", f"{both['mae_image']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(tables: Dict[str, Any], split: str, mode: str = "param") -> List[str]:
    rows = tables[split][mode]
    methods = [m for m in ("physics", "physics-smooth", "direct") if m in rows]
    names = list(rows[methods[0]]["targets"])
    lines = ["| target | " + " | ".join(f"{m} MAE" for m in methods) + " | " + " | ".join(f"{m} SSIM" for m in methods) + " |",
             "|---|" + "---|" * (2 * len(methods))]
    for name in names:
        cells = [f"{rows[m]['targets'][name]['mae']:.1f}" if name in rows[m]["targets"] else "-" for m in methods]
        cells += [f"{rows[m]['targets'][name]['ssim']:.3f}" if name in rows[m]["targets"] else "-" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
