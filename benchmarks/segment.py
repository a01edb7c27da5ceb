"""Benchmark of whole-brain subcortical segmentation: the shipped model vs its baselines, time and peak memory.

The bundled sample (186 x 219 x 172 at 1 mm) goes through the very path of ``syntheticmri segment``
(SyntheticMRILib.models.segmenter.segment: input checks, learned contrasts, the search for the structures'
box, the U-Net on it slice by slice, largest connected components). The shipped model also runs on every
slice of the head, as before the box search (``search=False``). Every model runs in a fresh process so that its peak memory (the
process's maximum resident set; on a GPU also torch's peak allocation) is its own. The alternatives,
in the same run on the same maps: the fixed clinical contrasts (T1w + T2w + T2-FLAIR) through the same
U-Net, from Resources/Models/baselines. Printed anchors (not measured
here): FastSurfer, about a minute per brain on a GPU for its whole pipeline; SynthSeg, minutes on a CPU.

    python benchmarks/segment.py [--repeat 3] [--device cpu|cuda] [--threads N]

The last row is the command a user runs, end to end, in a fresh process.

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

import torch

MODELS = {"learned contrast (shipped)": ("subcortical.pt",), "fixed clinical contrasts": ("baselines", "fixed.pt"),
          "shipped, every slice (before)": ("subcortical.pt",)}
EVERY_SLICE = "shipped, every slice (before)"  # the same network without the structure box (search=False)


def measure(name: str, device_name: str, repeat: int) -> dict:
    """In this process: load the sample, segment it ``repeat`` times, report the best time and the peak memory."""
    from SyntheticMRILib.io.maps import load_maps
    from SyntheticMRILib.resources import resource_path, sample_paths
    from SyntheticMRILib.models.segmenter import load_model, segment

    device = torch.device(device_name)
    paths = sample_paths()
    maps = load_maps(paths["t1"], paths["t2"], paths["pd"])
    model = load_model(resource_path("Models", *MODELS[name]), device)
    search = name != EVERY_SLICE
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    segment(maps, model, device, search=search)  # warm-up: allocator, kernels, caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        segment(maps, model, device, search=search)
        sync()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None,
            "shape": list(maps.t1.shape)}


def end_to_end(device: str, repeat: int) -> float:
    """Best wall time of the ``syntheticmri segment`` command on the sample, as a user runs it."""
    import tempfile

    from SyntheticMRILib.resources import sample_paths

    paths, times = sample_paths(), []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-m", "SyntheticMRILib.apps.cli", "segment", "--t1", str(paths["t1"]),
                       "--t2", str(paths["t2"]), "--pd", str(paths["pd"]), "-o", os.path.join(folder, "seg.nrrd"),
                       "--volumes", os.path.join(folder, "volumes.csv"), "--device", device]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model in this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.repeat)))
        return
    results = {}
    for name in MODELS:
        command = [sys.executable, __file__, "--one", name, "--device", args.device, "--repeat", str(args.repeat),
                   "--threads", str(args.threads)]
        results[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    shape = "x".join(map(str, results[next(iter(MODELS))]["shape"][::-1]))
    print(f"whole-brain subcortical segmentation, {shape} at 1 mm, best of {args.repeat}, {args.device} ({where})")
    print(f"{'model':30s} {'time':>8s} {'peak RSS':>9s} {'GPU peak':>9s} {'time vs shipped':>16s}")
    reference = results[next(iter(MODELS))]["seconds"]
    for name, r in results.items():
        gpu = f"{r['gpu_gib']:.2f} GiB" if r["gpu_gib"] is not None else "-"
        print(f"{name:30s} {r['seconds']:7.2f}s {r['rss_gib']:6.2f} GiB {gpu:>9s} {r['seconds'] / reference:15.2f}x")
    command = end_to_end(args.device, args.repeat)
    print(f"{'syntheticmri segment, end to end':30s} {command:7.2f}s {'':>9s} {'':>9s} {command / reference:15.2f}x"
          "   (a fresh process: start-up, imports, reading the maps, writing the outputs)")
    print("goal: <= 10 s and <= 4 GB on 2 CPU cores; <= 1 s on an H100")
    print("anchors (published, not measured here): FastSurfer ~60 s per brain on a GPU (whole pipeline); "
          "SynthSeg minutes per brain on a CPU")


if __name__ == "__main__":
    main()
