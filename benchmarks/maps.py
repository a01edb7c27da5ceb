"""Benchmark of T1/T2/PD estimation from routine series: the shipped network vs the classical per-voxel fit.

The bundled sample's maps give T1w (SE TR 500 / TE 10), T2w (SE TR 4500 / TE 100) and T2-FLAIR (IR TR 9000 /
TE 90 / TI 2372) through the physics layer, with receiver gains 3, 500 and 0.2 and Rician noise at SNR 40.
The network runs through ``estimate_maps`` (the path of ``syntheticmri maps``); the alternative in the same
run is the per-voxel dictionary fit (``models.voxelfit``) over the head, its gains calibrated on white
matter. Printed: time, peak memory (each method in a fresh process), T1/T2/PD PSNR over the brain, and the
ratio. The sample is one of the training anatomies, so the accuracy columns are a sanity check; the model
card has the held-out tables.

    python benchmarks/maps.py [--repeat 3] [--device cpu|cuda]

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

METHODS = ("network (shipped)", "per-voxel fit")


def _series():
    from SyntheticMRILib.io.volumes import read_volume
    from SyntheticMRILib.physics.routine import series_protocols
    from SyntheticMRILib.resources import sample_paths
    from SyntheticMRILib.training.routine import Acquisition, acquire

    paths = sample_paths()
    maps = {name: read_volume(path) for name, path in paths.items()}
    protocols = series_protocols({"t1w": {"tr": 500, "te": 10}, "t2w": {"tr": 4500, "te": 100},
                                  "flair": {"tr": 9000, "te": 90, "ti": 2372}})
    truth = np.stack([maps[m].array.astype(np.float32) for m in ("t1", "t2", "pd")])
    acquisition = Acquisition((40.0,) * 3, 0.0, 1.0, (3.0, 500.0, 0.2), 0)
    series = acquire(torch.from_numpy(truth), protocols, acquisition, spatial_dims=3).numpy()
    return maps, protocols, truth, series


def measure(method: str, device_name: str, repeat: int) -> dict:
    from SyntheticMRILib.models.mapper import estimate_maps, load_mapper
    from SyntheticMRILib.models.voxelfit import calibrate_gains, fit_maps
    from SyntheticMRILib.training.map_metrics import map_scores

    maps, protocols, truth, series = _series()
    labels = maps["labels"].array
    device = torch.device(device_name)
    if method == METHODS[0]:
        model = load_mapper(device=device)
        volumes = [maps["t1"].with_array(s) for s in series]
        run = lambda: [v.array for v in estimate_maps(volumes, protocols, model, device)]  # noqa: E731
    else:
        gains = calibrate_gains(series, np.isin(labels, (2, 41)), protocols)
        run = lambda: fit_maps(series, labels > 0, protocols, gains)  # noqa: E731
    result = run()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    scores = map_scores(result, truth, labels)
    return {"seconds": min(times), "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "psnr": [scores[m]["psnr"] for m in ("t1", "t2", "pd")]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure one method, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.repeat)))
        return
    rows = {}
    for method in METHODS:
        out = subprocess.run([sys.executable, __file__, "--one", method, "--device", args.device, "--repeat",
                              str(args.repeat)], capture_output=True, text=True, check=True, env=os.environ)
        rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"T1/T2/PD from T1w + T2w + FLAIR, bundled sample 186 x 219 x 172, {args.device}, "
          f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, best of {args.repeat}")
    print("| method | time | peak RSS | T1 / T2 / PD PSNR (dB) | time vs network |")
    print("|---|---:|---:|---:|---:|")
    base = rows[METHODS[0]]["seconds"]
    for method, row in rows.items():
        psnr = " / ".join(f"{v:.1f}" for v in row["psnr"])
        print(f"| {method} | {row['seconds']:.1f} s | {row['rss_gib']:.2f} GiB | {psnr} | {row['seconds'] / base:.1f}x |")


if __name__ == "__main__":
    main()
