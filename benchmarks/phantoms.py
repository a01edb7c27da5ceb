"""Benchmark of the phantom generator: seconds per subject by step, and disk per subject.

Prints one table: the steady-state cost of a subject (head templates already built),
the one-off cost of the head templates and the amortized cost over a 40-subject set;
beside them, the alternative of building the head layers for every subject
(``phantom.add_head_layers`` on the warped brain) and unquantized float32 files, with ratios.

    python benchmarks/phantoms.py [--count 4] [--resolution 1] [--source sample]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from SyntheticMRILib.phantoms import head as phantom

from SyntheticMRILib.phantoms import generator as phantoms
from SyntheticMRILib.io.volumes import write_volume


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--source", default="sample")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    r = args.resolution
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), load average {load:.2f}; {args.count} {args.split} subjects of "
          f"'{args.source}' at {r:g} mm, field of view {phantoms.VARIATION.fov_mm} mm")

    start = time.perf_counter()
    phantoms.load_source(args.source)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    for variant in range(phantoms.VARIATION.head_variants):
        phantoms._head_template(args.source, variant, r)
    head_s = time.perf_counter() - start

    specs = phantoms.plan_split(args.split, args.count, seed=2026, sources=[args.source] if args.split != "external" else None)
    timings: dict = {}
    sizes, raw_sizes = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for spec in specs:
            subject = phantoms.generate_subject(spec, r, timings=timings)
            start = time.perf_counter()
            phantoms.write_subject(subject, Path(scratch) / "q")
            timings["write files"] = timings.get("write files", 0.0) + time.perf_counter() - start
            sizes.append(folder_mb(Path(scratch) / "q" / spec.id))
            raw = Path(scratch) / "raw" / spec.id  # the alternative: the same maps as computed, not quantized
            relax = {k: tuple(v) for k, v in subject.record["relaxation"].items()}
            for name, array in zip(("t1", "t2", "pd"), phantoms._maps(subject.labels, relax, (spec.seed, 5))):
                write_volume(subject.labels.with_array(array), raw / f"{name}.nrrd")
            write_volume(subject.labels, raw / "labels.nrrd")
            raw_sizes.append(folder_mb(raw))
        # the alternative to cached head templates: head layers built around each warped brain
        brain = subject.labels.with_array(np.where(np.isin(subject.labels.array, list(phantom.HEAD_LABEL_NAMES)), 0, subject.labels.array))
        start = time.perf_counter()
        phantom.add_head_layers(brain, seed=1)
        per_subject_head_s = time.perf_counter() - start

    n = len(specs)
    steps = {k: v / n for k, v in timings.items() if k != "head template (cached)"}
    steady = sum(steps.values())
    amortized = steady + (head_s + load_s) / 40
    rows = [(f"  {step}", f"{seconds:.2f} s") for step, seconds in steps.items()]
    rows += [
        ("per subject, steady state", f"{steady:.2f} s"),
        (f"one-off: load source + {phantoms.VARIATION.head_variants} head templates", f"{load_s + head_s:.1f} s"),
        ("per subject, amortized over 40", f"{amortized:.2f} s"),
        ("alternative: + head layers per subject", f"{steady + per_subject_head_s:.2f} s"),
        ("  ratio (alternative / this)", f"{(steady + per_subject_head_s) / amortized:.1f}x"),
        ("disk per subject (maps 1/8 ms, 1/1024)", f"{np.mean(sizes):.1f} MB"),
        ("alternative: unquantized float32 maps", f"{np.mean(raw_sizes):.1f} MB"),
        ("  ratio (alternative / this)", f"{np.mean(raw_sizes) / np.mean(sizes):.1f}x"),
        ("40-subject training set on disk", f"{40 * np.mean(sizes) / 1e3:.2f} GB"),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"{'step':<{width}}  {'value':>9}")
    for a, b in rows:
        print(f"{a:<{width}}  {b:>9}")


if __name__ == "__main__":
    main()
