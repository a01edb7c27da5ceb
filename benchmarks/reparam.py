"""Benchmark of re-parameterization on a whole brain: both engines, per target, and the physics engine's slider move.

The bundled sample's maps give a T2w (SE TR 4500 / TE 100, gain 300, Rician noise at SNR 40, no bias); each
engine re-parameterizes it to a T1w (SE 500/15) through ``reparameterize`` (the path of ``syntheticmri
reparam``). Rows (each engine in a fresh process, best of ``--repeat``):

* physics, first target: the network predicts T1/T2/PD, the physics layer renders the target;
* physics, slider move: the maps are there (``ScanMaps``), one more target over the whole volume;
* physics, visible slices: three orthogonal slices of that target, what the Slicer preview computes per move;
* direct, per target: the image-to-image network, once per target (it has no maps to keep).

Printed: time, peak memory, MAE against the truth (0-255 over the head, as the model card) and the ratio to
the direct engine. The sample is one of the training anatomies: the accuracy column is a sanity check; the
model card has the held-out tables.

    python benchmarks/reparam.py [--repeat 3] [--device cpu|cuda]

Run by hand; timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

ROWS = ("physics, first target", "physics, slider move", "physics, visible slices", "direct, per target")


def _case():
    from SyntheticMRILib.io.volumes import read_volume
    from SyntheticMRILib.physics.protocols import Protocol
    from SyntheticMRILib.physics.synthesis import synthesize
    from SyntheticMRILib.resources import sample_paths
    from SyntheticMRILib.training.augment import scanner_effects

    maps = {name: read_volume(path) for name, path in sample_paths().items()}
    truth = [torch.from_numpy(maps[m].array.astype(np.float32)) for m in ("t1", "t2", "pd")]
    source, target = Protocol("se", 4500.0, 100.0), Protocol("se", 500.0, 15.0)
    generator = torch.Generator().manual_seed(0)
    image = 300.0 * scanner_effects(synthesize(*truth, source), generator, snr=40.0, bias=0.0, spatial_dims=3)
    expected = 300.0 * synthesize(*truth, target)
    return maps, source, target, maps["t1"].with_array(image.numpy()), expected.numpy()


def measure(engine: str, device_name: str, repeat: int) -> dict:
    from SyntheticMRILib.models.reparam import load_reparam, predict_scan_maps, reparameterize
    from SyntheticMRILib.training.reparam_eval import image_scores

    maps, source, target, image, expected = _case()
    head = maps["labels"].array > 0
    device = torch.device(device_name)
    model = load_reparam(engine, device=device)
    runs = {}
    if engine == "physics":
        kept = predict_scan_maps(image, source, model, device)
        k, j, i = (n // 2 for n in image.array.shape)
        runs[ROWS[0]] = lambda: reparameterize(image, source, target, engine, model, device).array
        runs[ROWS[1]] = lambda: kept.render(target)
        runs[ROWS[2]] = lambda: [kept.render(target, region) for region in ((k,), (slice(None), j), (slice(None), slice(None), i))]
    else:
        runs[ROWS[3]] = lambda: reparameterize(image, source, target, engine, model, device).array
    out = {}
    for row, run in runs.items():
        result = run()  # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            result = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        mae = image_scores(result, expected, head)["mae"] if isinstance(result, np.ndarray) else float("nan")
        out[row] = {"seconds": min(times), "mae": mae}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return {row: {**value, "rss_gib": rss} for row, value in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure one engine, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.repeat)))
        return
    rows = {}
    for engine in ("physics", "direct"):
        out = subprocess.run([sys.executable, __file__, "--one", engine, "--device", args.device, "--repeat",
                              str(args.repeat)], capture_output=True, text=True, check=True, env=os.environ)
        rows.update(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"T2w SE 4500/100 -> T1w SE 500/15, bundled sample 186 x 219 x 172, {args.device}, {platform.machine()} "
          f"{os.cpu_count()} cores, torch {torch.__version__}, best of {args.repeat}")
    print("| path | time | peak RSS | MAE (0-255, head) | time vs direct |")
    print("|---|---:|---:|---:|---:|")
    base = rows[ROWS[3]]["seconds"]
    for row in ROWS:
        r = rows[row]
        mae = "-" if np.isnan(r["mae"]) else f"{r['mae']:.1f}"
        print(f"| {row} | {r['seconds'] * 1000:.0f} ms | {r['rss_gib']:.2f} GiB | {mae} | {r['seconds'] / base:.2f}x |")


if __name__ == "__main__":
    main()
