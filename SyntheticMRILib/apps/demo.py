"""The main job on the bundled sample: every preset contrast, the learned contrasts, the subcortical
segmentation, a montage and a Slicer scene.

What the folder holds, and why it is ~90 MB rather than ~250 MB (README, below the main command): each contrast is a display
image, stored as 12-bit scaled integers (:data:`~SyntheticMRILib.io.volumes.COMPACT_BITS`, like scanner DICOM)
with its provenance in the header; ``--storage float32`` keeps float32. The scene holds what Slicer cannot
recompute from the maps (the maps themselves, exactly, and the two label maps) and only two contrasts
(:data:`SCENE_CONTRASTS`): the module synthesizes any other from the maps in a second, and every contrast is
also a file beside it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..io.figures import Panel, save_montage
from ..io.provenance import SCALE_KEY, Provenance, write_contrast
from ..io.labels import write_seg_nrrd
from ..io.maps import Maps, load_maps
from ..physics.protocols import PRESETS, Protocol
from ..resources import sample_paths
from ..models.segmenter import load_model, segment, structure_dice
from ..physics.synthesis import synthesize_volume
from ..physics.tissues import FREESURFER_TISSUE
from ..io.volumes import COMPACT_BITS, Volume, quantize, read_volume, write_volume

__all__ = ["run_demo", "SCENE_CONTRASTS"]

# The contrasts the scene holds besides the maps: the anatomical reference and the contrast synthetic MRI is
# read for first. Each costs ~4.4 MB in the scene; the others are files in the folder and one click in the module.
SCENE_CONTRASTS = ("T1w", "T2-FLAIR")

_LEFT_THALAMUS = 10  # FreeSurfer numbering


def _center_lps(labels: Volume) -> np.ndarray:
    """Physical centre (LPS, mm) of the left thalamus: the views cut through the deep grey
    matter, and the sagittal one through the basal ganglia rather than the midline CSF."""
    k, j, i = np.nonzero(labels.array == _LEFT_THALAMUS)
    index = np.array([i.mean(), j.mean(), k.mean()])
    direction = np.asarray(labels.direction).reshape(3, 3)
    return np.asarray(labels.origin) + direction @ (index * np.asarray(labels.spacing))


def _title(name: str, protocol: Protocol) -> str:
    """A montage title: the contrast's name and its sequence, "T2-FLAIR (IR)", or the name alone ("DIR")."""
    sequence = protocol.sequence.upper()
    return name if name.upper() == sequence else f"{name} ({sequence})"


def _exact_integers(volume: Volume) -> Volume:
    """``volume`` as uint16 when its values are integers in 0..65535 (the sample's T1 and T2 in ms): the same
    values, stored in half the bytes of float32 before compression."""
    array = volume.array
    if array.dtype.kind == "f" and np.isfinite(array).all() and array.min(initial=0) >= 0 \
            and array.max(initial=0) <= np.iinfo(np.uint16).max and np.array_equal(array, np.rint(array)):
        return volume.with_array(array.astype(np.uint16))
    return volume


def _write_scene(path: Path, maps: Maps, contrasts: Dict[str, Volume], provenances: Dict[str, Provenance],
                 segmentations: Dict[str, Volume], focus_lps: np.ndarray, bits: Optional[int]) -> Optional[Path]:
    """The maps, the contrasts and the label maps (as segmentations) in one Slicer scene, when MRML is available.

    It opens on the T1 map with the subcortical segmentation over it (the sample's labels, which cover the whole
    head, hidden) in a four-up layout cut through the left thalamus. The quantitative maps are stored exactly:
    integer-valued ones (T1, T2 in ms) as uint16, others as float32. ``contrasts`` (the scene's few) are stored
    as the files beside the scene store them: with ``bits``, the same int16 integers with their scale in the
    attribute SyntheticMRI.Scale (value = int16 * scale; the bridge applies it); without, float32. Each contrast
    node carries its provenance as attributes (SyntheticMRI.Protocol, .Sequence, .TR_ms, ...).
    """
    try:
        from ..slicer.bridge import write_scene_mrb
    except ImportError:
        print("note: no scene.mrb: MRML is missing; pip install -e '.[scene]' adds slicer-core")
        return None
    volumes = {"T1 map (ms)": _exact_integers(maps.volume(maps.t1)),
               "T2 map (ms)": _exact_integers(maps.volume(maps.t2)), "PD map": maps.volume(maps.pd)}
    attributes = {name: provenances[name].fields() for name in contrasts}
    for name, contrast in contrasts.items():
        if bits is not None:
            voxels, scale = quantize(contrast.array, bits)
            contrast = contrast.with_array(voxels)
            attributes[name][SCALE_KEY] = repr(scale)
        volumes[name] = contrast
    return write_scene_mrb(path, volumes, segmentations, overwrite=True, attributes=attributes,
                           background="T1 map (ms)", visible_segmentations=["Subcortical segmentation"],
                           focus_lps=focus_lps)


def run_demo(out: Path, device: torch.device, bits: Optional[int] = COMPACT_BITS) -> Dict[str, Optional[Path]]:
    """Synthesize every preset from the sample into ``out``: volumes (``bits``-bit scaled integers, or float32
    when None; provenance in each header), ``montage.png`` and ``scene.mrb`` (when slicer-core or Slicer is
    there); returns the files written."""
    paths = sample_paths()
    maps: Maps = load_maps(paths["t1"], paths["t2"], paths["pd"])
    labels = read_volume(paths["labels"])
    t1, t2, pd = maps.tensors(device)
    out.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Optional[Path]] = {}
    contrasts: Dict[str, Volume] = {}
    provenances: Dict[str, Provenance] = {}
    panels = []
    start = time.perf_counter()
    for preset in tqdm(PRESETS.values(), desc="contrasts", unit="contrast"):
        image = maps.volume(synthesize_volume(t1, t2, pd, preset.protocol).cpu().numpy())
        contrasts[preset.name], provenances[preset.name] = image, Provenance.of_preset(preset)
        written[preset.name] = write_contrast(image, out / f"{preset.name}.nrrd", provenances[preset.name],
                                              overwrite=True, bits=bits)
        signed = preset.protocol.sequence in ("psir", "dsir")
        panels.append(Panel(_title(preset.name, preset.protocol), preset.protocol.caption(), image, signed))
    seconds = time.perf_counter() - start
    print(f"{len(PRESETS)} contrasts of a {' x '.join(map(str, maps.grid.size))} volume (x, y, z) in {seconds:.1f} s on {device}")

    model = load_model(device=device)
    for k, protocol in enumerate(model.contrast.protocols()):
        name = f"Learned {k + 1}"
        image = maps.volume(synthesize_volume(t1, t2, pd, protocol).cpu().numpy())
        contrasts[name], provenances[name] = image, Provenance(protocol)
        written[name] = write_contrast(image, out / f"learned_{k + 1}_{protocol.sequence}.nrrd", provenances[name],
                                       overwrite=True, bits=bits)
        panels.append(Panel(_title(name, protocol), protocol.caption(), image))
        print(f"  learned contrast {k + 1}: {protocol.sequence} {protocol.caption()}")
    start = time.perf_counter()
    segmentation = segment(maps, model, device)
    seconds = time.perf_counter() - start
    written["segmentation"] = write_volume(segmentation, out / "segmentation.nrrd", overwrite=True)
    written["segmentation (Slicer)"] = write_seg_nrrd(segmentation, out / "segmentation.seg.nrrd", overwrite=True)
    dice = structure_dice(segmentation.array, labels.array)
    print(f"subcortical segmentation in {seconds:.1f} s on {device}: mean Dice {np.mean(list(dice.values())):.3f} "
          f"against the sample's labels (lowest {min(dice.values()):.3f}, {min(dice, key=dice.get)})")
    panels.append(Panel("Segmentation", f"learned contrasts + U-Net, mean Dice {np.mean(list(dice.values())):.2f}",
                        contrasts["Learned 1"], overlay=segmentation))

    brain = labels.with_array(np.isin(labels.array, list(FREESURFER_TISSUE)).astype(np.uint8))
    center = _center_lps(labels)
    written["montage"] = save_montage(
        panels,
        out / "montage.png",
        center_lps=center,
        title="SyntheticMRI on the bundled sample (3 T): every preset, the learned contrasts and the segmentation",
        window_mask=brain,
    )
    segmentations = {"Sample labels": labels, "Subcortical segmentation": segmentation}
    scene_contrasts = {name: contrasts[name] for name in SCENE_CONTRASTS}
    written["scene"] = _write_scene(out / "scene.mrb", maps, scene_contrasts, provenances, segmentations, center, bits)
    for name, path in written.items():
        if path is not None:
            print(f"  {name:10s} {path}")
    return written
