"""Benchmark of the live preview: refreshing what three slice views show vs synthesizing the whole volume.

Prints one table. A 256^3 float32 volume (T2-FLAIR); the views are the three
orthogonal planes through a voxel centre (axis-aligned: one 256^2 voxel slice
each; between voxel centres, two) and three oblique views (tilted 10-25
degrees: a band of a few voxels per column). A refresh is what the Slicer module does per slider step: the plane
geometry (SyntheticMRILib.slicer.preview.plane_voxels) and the gather -> synthesize ->
scatter into the output array (synthesize_planes). The alternative, in the same
run on the same maps: the whole volume with synthesize_volume, eager and fused
(torch.compile, compiled once before timing).

    python benchmarks/preview.py [--size 256] [--repeat 7] [--device cpu|cuda]

Run by hand; timings are never asserted in tests.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch

from SyntheticMRILib.slicer.preview import plane_voxels, synthesize_planes
from SyntheticMRILib.physics.protocols import preset
from SyntheticMRILib.physics.synthesis import synthesize_volume

from physics import best_ms  # benchmarks/physics.py: one timing rule for every table


def rotation(x_deg: float, z_deg: float) -> np.ndarray:
    a, b = math.radians(x_deg), math.radians(z_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def views(centre: np.ndarray, tilts) -> list:
    """Axial, sagittal and coronal SliceToRAS matrices through ``centre``, each rotated by its (x, z) tilt."""
    axes = (np.eye(3), np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float), np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], float))
    matrices = []
    for axis, tilt in zip(axes, tilts):
        matrix = np.eye(4)
        matrix[:3, :3] = rotation(*tilt) @ axis
        matrix[:3, 3] = centre
        matrices.append(matrix)
    return matrices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    n, device = args.size, torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    protocol = preset("T2-FLAIR").protocol
    rng = np.random.default_rng(0)
    arrays = (rng.uniform(300, 4500, (n, n, n)), rng.uniform(30, 2000, (n, n, n)), rng.uniform(0.05, 1, (n, n, n)))
    maps = [torch.from_numpy(a.astype(np.float32)).to(device) for a in arrays]
    out = np.zeros((n, n, n), np.float32)  # the output node's voxels: host memory, as in Slicer
    ras_to_ijk = np.eye(4)  # a 1 mm grid at the origin: RAS = IJK
    voxel, between = np.full(3, n // 2), np.full(3, (n - 1) / 2.0)  # a voxel centre; the volume's centre
    cases = {
        "3 orthogonal views": views(voxel, [(0, 0)] * 3),  # one voxel slice each
        "  between slices": views(between, [(0, 0)] * 3),  # two each: the view interpolates
        "3 oblique views": views(between, [(15, 20), (25, -10), (-20, 15)]),
    }
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()}, " \
        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"# {name}; torch {torch.__version__}; T2-FLAIR {protocol.caption()}; {n}^3 float32 maps on {device.type}, "
          f"output in host memory; best of {args.repeat}")

    with torch.no_grad():
        eager = best_ms(lambda: synthesize_volume(*maps, protocol), args.repeat, sync)
        start = time.perf_counter()
        synthesize_volume(*maps, protocol, fused=True)
        sync()
        compile_s = time.perf_counter() - start
        fused = best_ms(lambda: synthesize_volume(*maps, protocol, fused=True), args.repeat, sync)
        fused_host = best_ms(lambda: synthesize_volume(*maps, protocol, fused=True).cpu().numpy(), args.repeat, sync)

    rows = [
        (f"whole volume {n}^3", "synthesize_volume, eager", n**3, eager, None),
        (f"whole volume {n}^3", f"synthesize_volume, fused (compiled once, {compile_s:.1f} s)", n**3, fused, None),
        (f"whole volume {n}^3", "  same, + result to host (what a release costs)", n**3, fused_host, None),
    ]
    for case, matrices in cases.items():
        planes = [plane_voxels(m, ras_to_ijk, out.shape) for m in matrices]
        voxels = sum(p.indices.size for p in planes)
        geometry = best_ms(lambda: [plane_voxels(m, ras_to_ijk, out.shape) for m in matrices], args.repeat)

        def refresh():
            synthesize_planes(*maps, protocol, [plane_voxels(m, ras_to_ijk, out.shape) for m in matrices], out)

        rows.append((case, f"preview: geometry + synthesize_planes (geometry {geometry:.2f} ms)", voxels,
                     best_ms(refresh, args.repeat, sync), True))

    print(f"{'case':22s} {'method':62s} {'voxels':>10s} {'ms':>9s} {'eager/this':>11s} {'fused/this':>11s}")
    for case, method, voxels, ms, preview in rows:
        ratios = f"{eager / ms:10.1f}x {fused / ms:10.1f}x" if preview else f"{eager / ms:10.2f}x {fused / ms:10.2f}x"
        print(f"{case:22s} {method:62s} {voxels:10d} {ms:9.3f} {ratios}")


if __name__ == "__main__":
    main()
