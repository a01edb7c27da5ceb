"""Benchmark of the physics layer: one contrast of a 256^3 volume per sequence, and one 256^2 preview slice.

Prints one table: naive NumPy on the same data in the same run (the reference), this project's default
path (``synthesize_volume``, what the CLI, batch and the Slicer module run) for every sequence, and the
fused kernel (``fused=True``) for T2-FLAIR. The first call of each is also timed in a fresh Python
process: for the fused kernel with an empty compile cache (cold: it compiles) and again with the cache
that run left (warm: it loads). Steady state is the best of ``--repeat`` calls; the ratio is NumPy's
steady state over the method's. On a GPU it adds the fused kernel against the memory-bandwidth limit
(4 float32 arrays moved once).

    python benchmarks/physics.py [--size 256] [--repeat 9] [--fused-sequences ir]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

# One preset per sequence; T2-FLAIR (IR) is the headline case.
CASES = {"se": "T1w", "ir": "T2-FLAIR", "psir": "PSIR", "dir": "DIR", "gre": "T1w-GRE", "dsir": "dSIR"}


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


def random_maps(n: int):
    rng = np.random.default_rng(0)
    t1 = rng.uniform(300, 4500, (n, n, n)).astype(np.float32)
    t2 = rng.uniform(30, 2000, (n, n, n)).astype(np.float32)
    pd = rng.uniform(0.05, 1, (n, n, n)).astype(np.float32)
    return t1, t2, pd


def numpy_naive(sequence: str, t1, t2, pd, p):
    """The textbook one-liner of each sequence on whole arrays (the usual alternative)."""
    if sequence == "se":
        return pd * (1 - 2 * np.exp(-(p.tr - p.te / 2) / t1) + np.exp(-p.tr / t1)) * np.exp(-p.te / t2)
    if sequence in ("ir", "psir"):
        signal = pd * (1 - 2 * np.exp(-p.ti / t1) + np.exp(-p.tr / t1)) * np.exp(-p.te / t2)
        return signal if sequence == "psir" else np.abs(signal)
    if sequence == "dir":
        return np.abs(pd * (1 - 2 * np.exp(-p.ti2 / t1) + 2 * np.exp(-p.ti / t1) - np.exp(-p.tr / t1)) * np.exp(-p.te / t2))
    if sequence == "gre":
        a = np.deg2rad(p.flip)
        e1 = np.exp(-p.tr / t1)
        return pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-p.te / t2)
    if sequence == "dsir":
        short = np.abs(pd * (1 - 2 * np.exp(-p.ti2 / t1) + np.exp(-p.tr / t1)) * np.exp(-p.te / t2))
        long_ = np.abs(pd * (1 - 2 * np.exp(-p.ti / t1) + np.exp(-p.tr / t1)) * np.exp(-p.te / t2))
        return (short - long_) / (short + long_)
    raise ValueError(sequence)


def child(args) -> None:
    """One fresh process: the first call of a path (start-up included), then its steady state, as JSON."""
    start = time.perf_counter()
    import torch

    from SyntheticMRILib.physics.protocols import preset
    from SyntheticMRILib.physics.synthesis import synthesize_volume

    imported = time.perf_counter() - start
    arrays = random_maps(args.size)
    maps = [torch.from_numpy(a) for a in arrays]
    protocol = preset(CASES[args.sequence]).protocol
    if args.child == "numpy":
        run = functools.partial(numpy_naive, args.sequence, *arrays, protocol)
    else:
        run = functools.partial(synthesize_volume, *maps, protocol, fused=args.child == "fused")
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    steady = best_ms(run, args.repeat)
    print(json.dumps({"import_s": imported, "first_ms": first * 1e3, "steady_ms": steady}))


def fresh_process(path: str, sequence: str, args, env=None) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", path, "--sequence", sequence,
               "--size", str(args.size), "--repeat", str(args.repeat)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--fused-sequences", default="ir", help="comma-separated sequences for the fused rows (each "
                        "compiles once, ~10 s), or 'none'")
    parser.add_argument("--child", choices=("numpy", "default", "fused"), help=argparse.SUPPRESS)
    parser.add_argument("--sequence", default="ir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch

    from SyntheticMRILib.physics.protocols import preset
    from SyntheticMRILib.physics.synthesis import synthesize, synthesize_volume

    n = args.size
    arrays = random_maps(n)
    maps = [torch.from_numpy(a) for a in arrays]
    print(f"# {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}), numpy {np.__version__}, "
          f"{n}^3 float32, best of {args.repeat}")
    rows = []  # (case, method, first call in a fresh process (ms) or None, steady ms, reference ms)
    for sequence, name in CASES.items():
        protocol = preset(name).protocol
        case = f"{name} ({sequence})"
        naive = functools.partial(numpy_naive, sequence, *arrays, protocol)
        default = functools.partial(synthesize_volume, *maps, protocol)
        reference = best_ms(naive, args.repeat)
        expected = naive()
        error = float(np.abs(default().numpy() - expected).max() / np.abs(expected).max())
        assert error < 1e-5, f"{case}: default path differs from NumPy by {error:.2g} of the maximum"
        rows.append((case, "NumPy, naive (reference)", fresh_process("numpy", sequence, args)["first_ms"], reference, reference))
        if sequence == "ir":
            with torch.no_grad():
                one_pass = best_ms(functools.partial(synthesize, *maps, protocol), max(1, args.repeat // 3))
            rows.append((case, "torch eager, one pass (synthesize)", None, one_pass, reference))
        first = fresh_process("default", sequence, args)["first_ms"]
        rows.append((case, "SyntheticMRI default (chunked)", first, best_ms(default, args.repeat), reference))
        if sequence in args.fused_sequences.split(","):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
                cold = fresh_process("fused", sequence, args, env)
                warm = fresh_process("fused", sequence, args, env)
            rows.append((case, "SyntheticMRI fused, empty cache (compiles)", cold["first_ms"], cold["steady_ms"], reference))
            rows.append((case, "SyntheticMRI fused, warm cache (loads)", warm["first_ms"], warm["steady_ms"], reference))

    print(f"{'case':18s} {'method':44s} {'1st call ms':>12s} {'ms':>8s} {'vs NumPy':>9s}")
    for case, method, first, ms, reference in rows:
        first_text = "" if first is None else f"{first:12.1f}"
        print(f"{case:18s} {method:44s} {first_text:>12s} {ms:8.1f} {reference / ms:8.2f}x")
    print("(1st call: in a fresh Python process, after its imports; fresh memory is slow to touch on this VM, so"
          " first calls vary)")

    protocol = preset("T2-FLAIR").protocol
    slices = [m[n // 2].clone() for m in maps]
    with torch.no_grad():
        slice_ms = best_ms(lambda: synthesize(*slices, protocol), args.repeat * 20)
    numpy_slice = best_ms(lambda: numpy_naive("ir", *(s.numpy() for s in slices), protocol), args.repeat * 20)
    print(f"{'slice ' + str(n) + '^2 (ir)':18s} {'NumPy, naive':44s} {'':>12s} {numpy_slice:8.3f} {1:8.2f}x")
    print(f"{'slice ' + str(n) + '^2 (ir)':18s} {'SyntheticMRI synthesize (eager)':44s} {'':>12s} {slice_ms:8.3f} "
          f"{numpy_slice / slice_ms:8.2f}x")

    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        gpu = [m.cuda() for m in maps]
        big = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device="cuda")  # 1 GiB
        copy_ms = best_ms(lambda: big.clone(), args.repeat, sync)
        bandwidth = 2 * big.numel() * 4 / (copy_ms / 1e3)  # read + write
        limit_ms = 4 * 4 * n**3 / bandwidth * 1e3
        with torch.no_grad():
            eager = best_ms(lambda: synthesize_volume(*gpu, protocol), args.repeat * 4, sync)
            fused = best_ms(lambda: synthesize_volume(*gpu, protocol, fused=True), args.repeat * 4, sync)
        name = torch.cuda.get_device_name()
        print(f"# {name}: device-copy bandwidth {bandwidth / 1e9:.0f} GB/s -> limit {limit_ms:.3f} ms for 4 x {n}^3 float32")
        for method, ms in (("SyntheticMRI default (one pass)", eager), ("SyntheticMRI fused", fused)):
            print(f"{'volume GPU':18s} {method:44s} {ms:9.3f}   {ms / limit_ms:5.2f}x the bandwidth limit")


if __name__ == "__main__":
    main()
