"""The main job on the bundled sample: every preset contrast, the learned contrasts, the subcortical
segmentation, a montage and a Slicer scene."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..io.figures import Panel, save_montage
from ..io.labels import write_seg_nrrd
from ..io.maps import Maps, load_maps
from ..physics.protocols import PRESETS, Protocol
from ..resources import sample_paths
from ..models.segmenter import load_model, segment, structure_dice
from ..physics.synthesis import synthesize_volume
from ..physics.tissues import FREESURFER_TISSUE
from ..io.volumes import Volume, read_volume, write_volume

__all__ = ["run_demo"]

_LEFT_THALAMUS = 10  # FreeSurfer numbering


def _center_lps(labels: Volume) -> np.ndarray:
    """Physical centre (LPS, mm) of the left thalamus: the views cut through the deep grey
    matter, and the sagittal one through the basal ganglia rather than the midline CSF."""
    k, j, i = np.nonzero(labels.array == _LEFT_THALAMUS)
    index = np.array([i.mean(), j.mean(), k.mean()])
    direction = np.asarray(labels.direction).reshape(3, 3)
    return np.asarray(labels.origin) + direction @ (index * np.asarray(labels.spacing))


def _write_scene(path: Path, maps: Maps, contrasts: Dict[str, Volume], protocols: Dict[str, Protocol],
                 segmentations: Dict[str, Volume], focus_lps: np.ndarray) -> Optional[Path]:
    """The maps, the contrasts and the label maps (as segmentations) in one Slicer scene, when MRML is available.

    It opens on the T1 map with the subcortical segmentation over it (the sample's labels, which cover the whole
    head, hidden) in a four-up layout cut through the left thalamus. The quantitative maps are stored exactly
    (float32); the contrasts, weighted images whose float32 low bits compress badly, as int16 scaled to their
    largest magnitude (attribute SyntheticMRI.Scale: value = int16 * scale, within 1/65534 of that magnitude),
    which halves the file. Each contrast node carries its protocol (attribute SyntheticMRI.Protocol).
    """
    try:
        from ..slicer.bridge import PROTOCOL_ATTRIBUTE, write_scene_mrb
    except ImportError:
        print("note: no scene.mrb: MRML is missing; pip install -e '.[scene]' adds slicer-core")
        return None
    maps_volumes = {"T1 map (ms)": maps.volume(maps.t1), "T2 map (ms)": maps.volume(maps.t2), "PD map": maps.volume(maps.pd)}
    attributes = {name: {PROTOCOL_ATTRIBUTE: f"{p.sequence} {p.caption()}"} for name, p in protocols.items()}
    return write_scene_mrb(path, {**maps_volumes, **contrasts}, segmentations, overwrite=True, scaled=list(contrasts),
                           attributes=attributes, background="T1 map (ms)",
                           visible_segmentations=["Subcortical segmentation"], focus_lps=focus_lps)


def run_demo(out: Path, device: torch.device) -> Dict[str, Optional[Path]]:
    """Synthesize every preset from the sample into ``out``: volumes, ``montage.png`` and
    ``scene.mrb`` (when slicer-core or Slicer is there); returns the files written."""
    paths = sample_paths()
    maps: Maps = load_maps(paths["t1"], paths["t2"], paths["pd"])
    labels = read_volume(paths["labels"])
    t1, t2, pd = maps.tensors(device)
    out.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Optional[Path]] = {}
    contrasts: Dict[str, Volume] = {}
    protocols: Dict[str, Protocol] = {}
    panels = []
    start = time.perf_counter()
    for preset in tqdm(PRESETS.values(), desc="contrasts", unit="contrast"):
        image = maps.volume(synthesize_volume(t1, t2, pd, preset.protocol).cpu().numpy())
        contrasts[preset.name], protocols[preset.name] = image, preset.protocol
        written[preset.name] = write_volume(image, out / f"{preset.name}.nrrd", overwrite=True)
        signed = preset.protocol.sequence in ("psir", "dsir")
        panels.append(Panel(preset.name, f"{preset.protocol.sequence.upper()} {preset.protocol.caption()}", image, signed))
    seconds = time.perf_counter() - start
    print(f"{len(PRESETS)} contrasts of a {'x'.join(map(str, maps.t1.shape))} volume in {seconds:.1f} s on {device}")

    model = load_model(device=device)
    for k, protocol in enumerate(model.contrast.protocols()):
        name = f"Learned {k + 1}"
        image = maps.volume(synthesize_volume(t1, t2, pd, protocol).cpu().numpy())
        contrasts[name], protocols[name] = image, protocol
        written[name] = write_volume(image, out / f"learned_{k + 1}_{protocol.sequence}.nrrd", overwrite=True)
        panels.append(Panel(name, f"{protocol.sequence.upper()} {protocol.caption()}", image))
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
    written["scene"] = _write_scene(out / "scene.mrb", maps, contrasts, protocols, segmentations, center)
    for name, path in written.items():
        if path is not None:
            print(f"  {name:10s} {path}")
    return written
