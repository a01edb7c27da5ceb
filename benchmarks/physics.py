"""Benchmark of the physics layer: one contrast of a 256^3 volume, and one 256^2 preview slice.

Prints one table: this project's paths, naive NumPy and plain eager torch on
the same data in the same run, and the ratios. On a GPU it adds the fused
kernel against the memory-bandwidth limit (4 float32 arrays moved once).

    python benchmarks/physics.py [--size 256] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from SyntheticMRILib.physics.protocols import preset
from SyntheticMRILib.physics.synthesis import synthesize, synthesize_volume


def best_ms(fn, repeat: int, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def numpy_ir(t1, t2, pd, tr, te, ti):
    """Naive NumPy: the textbook one-liner on whole arrays (the usual alternative)."""
    return np.abs(pd * (1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.size
    protocol = preset("T2-FLAIR").protocol
    rng = np.random.default_rng(0)
    t1 = rng.uniform(300, 4500, (n, n, n)).astype(np.float32)
    t2 = rng.uniform(30, 2000, (n, n, n)).astype(np.float32)
    pd = rng.uniform(0.05, 1, (n, n, n)).astype(np.float32)
    maps = [torch.from_numpy(a) for a in (t1, t2, pd)]
    slices = [m[n // 2].clone() for m in maps]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), T2-FLAIR {protocol.caption()}, {n}^3 float32")

    rows = []
    reference = best_ms(lambda: numpy_ir(t1, t2, pd, protocol.tr, protocol.te, protocol.ti), args.repeat)
    rows.append((f"volume {n}^3 CPU", "numpy, naive (baseline)", reference))
    with torch.no_grad():
        rows.append((f"volume {n}^3 CPU", "torch eager, one pass", best_ms(lambda: synthesize(*maps, protocol), args.repeat)))
        rows.append((f"volume {n}^3 CPU", "SyntheticMRI eager (chunked)", best_ms(lambda: synthesize_volume(*maps, protocol), args.repeat)))
        start = time.perf_counter()
        synthesize_volume(*maps, protocol, fused=True)
        compile_s = time.perf_counter() - start
        rows.append((f"volume {n}^3 CPU", f"SyntheticMRI fused (compile {compile_s:.1f} s once)",
                     best_ms(lambda: synthesize_volume(*maps, protocol, fused=True), args.repeat)))
        slice_ms = best_ms(lambda: synthesize(*slices, protocol), args.repeat * 20)
        numpy_slice = best_ms(lambda: numpy_ir(*(s.numpy() for s in slices), protocol.tr, protocol.te, protocol.ti), args.repeat * 20)
    print(f"{'case':22s} {'method':44s} {'ms':>9s} {'vs numpy':>9s}")
    for case, method, ms in rows:
        print(f"{case:22s} {method:44s} {ms:9.2f} {reference / ms:8.2f}x")
    print(f"{'preview slice ' + str(n) + '^2':22s} {'numpy, naive (baseline)':44s} {numpy_slice:9.3f} {1:8.2f}x")
    print(f"{'preview slice ' + str(n) + '^2':22s} {'SyntheticMRI synthesize (eager)':44s} {slice_ms:9.3f} {numpy_slice / slice_ms:8.2f}x")

    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        gpu = [m.cuda() for m in maps]
        big = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device="cuda")  # 1 GiB
        copy_ms = best_ms(lambda: big.clone(), args.repeat, sync)
        bandwidth = 2 * big.numel() * 4 / (copy_ms / 1e3)  # read + write
        limit_ms = 4 * 4 * n**3 / bandwidth * 1e3
        with torch.no_grad():
            eager = best_ms(lambda: synthesize(*gpu, protocol), args.repeat * 4, sync)
            fused = best_ms(lambda: synthesize_volume(*gpu, protocol, fused=True), args.repeat * 4, sync)
        name = torch.cuda.get_device_name()
        print(f"# {name}: device-copy bandwidth {bandwidth / 1e9:.0f} GB/s -> limit {limit_ms:.3f} ms for 4 x {n}^3 float32")
        for method, ms in (("torch eager", eager), ("SyntheticMRI fused", fused)):
            print(f"{'volume GPU':22s} {method:44s} {ms:9.3f}   {ms / limit_ms:5.2f}x the bandwidth limit")


if __name__ == "__main__":
    main()
