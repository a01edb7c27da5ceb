"""Draw the extension and module icon (128x128 PNG) with the physics layer itself.

A schematic axial head (scalp fat and muscle, cortex, white matter, putamen, ventricles), given the
3 T relaxation times of SyntheticMRILib.physics.tissues and shown in four quadrants as T1w, T2w, T2-FLAIR
and DIR, each computed by SyntheticMRILib.physics.synthesis from the preset of that name. Run from the
repository root after changing the tissue table or the presets:

    python SyntheticMRI/Resources/Icons/make_icon.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from SyntheticMRILib.physics.protocols import PRESETS  # noqa: E402
from SyntheticMRILib.physics.synthesis import synthesize  # noqa: E402
from SyntheticMRILib.physics.tissues import relaxation  # noqa: E402

SIZE = 128
SUPERSAMPLE = 4  # drawn at 512 px and averaged down: smooth edges
ROOT = Path(__file__).resolve().parents[3]
OUTPUTS = (ROOT / "SyntheticMRI.png", ROOT / "SyntheticMRI" / "Resources" / "Icons" / "SyntheticMRI.png")
QUADRANTS = (("T1w", "T2w"), ("T2-FLAIR", "DIR"))  # top row, bottom row


def tissue_maps(n: int):
    """T1, T2 (ms) and PD of the schematic head on an n x n grid (background 0), the head and brain masks."""
    y, x = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    ellipse = lambda cx, cy, a, b: ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1  # noqa: E731
    layers = [  # painted in order, later layers on top; symmetric, so each quadrant shows every tissue
        ("fat", ellipse(0, 0, 0.94, 0.98)),
        ("muscle", ellipse(0, 0, 0.87, 0.92)),
        ("cortex", ellipse(0, 0, 0.82, 0.87)),
        ("cerebral_wm", ellipse(0, 0, 0.68, 0.74)),
        ("putamen", ellipse(-0.42, 0, 0.1, 0.24) | ellipse(0.42, 0, 0.1, 0.24)),
        ("csf", ellipse(-0.16, 0, 0.08, 0.36) | ellipse(0.16, 0, 0.08, 0.36)),
    ]
    t1, t2, pd = (np.zeros((n, n), np.float32) for _ in range(3))
    for name, mask in layers:
        tissue = relaxation(name)
        t1[mask], t2[mask], pd[mask] = tissue.t1, tissue.t2, tissue.pd
    brain = layers[2][1]  # windows are set on the brain; scalp fat may saturate
    return t1, t2, pd, layers[0][1], brain


def main() -> None:
    n = SIZE * SUPERSAMPLE
    t1, t2, pd, head, brain = (torch.from_numpy(np.ascontiguousarray(a)) for a in tissue_maps(n))
    gray = np.zeros((n, n), np.float32)
    half = n // 2
    for row, names in enumerate(QUADRANTS):
        for column, name in enumerate(names):
            image = synthesize(t1, t2, pd, PRESETS[name].protocol).numpy()
            rows, columns = slice(row * half, (row + 1) * half), slice(column * half, (column + 1) * half)
            window = np.percentile(image[rows, columns][brain.numpy()[rows, columns]], 99)
            gray[rows, columns] = image[rows, columns] / window
    alpha = head.numpy().astype(np.float32)
    gap = max(1, SUPERSAMPLE)  # a thin transparent cross separates the four contrasts
    alpha[half - gap : half + gap, :] = 0
    alpha[:, half - gap : half + gap] = 0
    shrink = lambda a: a.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean(axis=(1, 3))  # noqa: E731
    gray, alpha = np.clip(shrink(gray * alpha), 0, 1), shrink(alpha)
    # un-premultiply so that edge pixels keep their gray level while fading out
    gray = np.where(alpha > 0, np.clip(gray / np.maximum(alpha, 1e-6), 0, 1), 0)
    rgba = np.dstack([gray, gray, gray, alpha])
    for path in OUTPUTS:
        plt.imsave(path, rgba)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
