"""One weighted scan as re-parameterization takes it: the image and its protocol.

The protocol comes from the command line or from a BIDS JSON sidecar beside the image (``RepetitionTime``,
``EchoTime``, ``InversionTime`` in seconds; the sequence is IR when the sidecar has an ``InversionTime`` or
``ScanningSequence`` says IR, else SE); command-line values win. Refused with one line: a missing file or
parameter, a 2-D or 4-D image, NaN, an impossible protocol (TE >= TR, times in seconds), a gradient-echo
scan (an MPRAGE too; :func:`~SyntheticMRILib.io.dicom_tags.scanning_sequence`), and an image that shows a
tissue brighter than its protocol can (a T2 map given as a scan; see :func:`check_not_a_map` for what it does
not catch), and a label map (:func:`check_not_labels`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..physics.protocols import Protocol
from ..physics.scans import SCAN_SEQUENCES, check_scan
from ..physics.tissues import TISSUES
from .dicom_tags import scanning_sequence
from .series import check_image, read_json, read_sidecar, sidecar_path, tissue_ratio
from .volumes import PathLike, Volume, read_volume

__all__ = ["WeightedScan", "load_scan", "check_not_a_map", "check_not_labels"]

_TOP_SHARE = 0.03  # the brightest share of the head: its mean is compared with the head's median ...
_MARGIN = 2.0  # ... and may exceed the brightest tissue of the protocol (over white matter) by this factor
_FLOOR = 1.5  # ... or by this ratio, whichever is larger
_HEAD_SHARE, _FLOOR_FACTOR = 0.02, 10.0  # the head of the check (see _head)
_LABEL_VALUES, _LABEL_FLAT = 256, 0.5  # a label map: integers, at most this many values, this share of flat neighbours


@dataclass(frozen=True)
class WeightedScan:
    """The image (float32, on its own grid), its protocol, and where the protocol came from."""

    image: Volume
    protocol: Protocol
    notes: Tuple[str, ...] = ()


def _sequence_from(data: Mapping[str, object], path: Path) -> Optional[str]:
    scanning = data.get("ScanningSequence")
    kinds = scanning if isinstance(scanning, list) else str(scanning or "").split("\\")
    try:
        return scanning_sequence(kinds, "InversionTime" in data, "RepetitionTime" in data)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def _head(image: np.ndarray) -> np.ndarray:
    """Voxels above 2 % of the 99th percentile and 10x the 5th percentile (air: ~3 sigma of a real scan's noise): all
    tissue of a map, where :func:`~SyntheticMRILib.io.series.head_mask` keeps only fluid on a T2 map (its
    threshold follows the brightest voxels)."""
    low, high = np.percentile(image, [5, 99])
    return image > max(_HEAD_SHARE * float(high), _FLOOR_FACTOR * float(low))


def check_not_a_map(image: np.ndarray, protocol: Protocol, what: str = "the scan") -> None:
    """Refuse an image whose brightest voxels exceed the head's median by far more than any tissue exceeds white
    matter at ``protocol``. A T2 map (fluid ~25x the median) is refused at any SE protocol in the ranges and at
    IR ones but where white matter is near its null (TI ~400-700 ms: 11 of 97 IR draws); a T1 map
    (~4x) is at the edge of what a T1w allows (scalp fat is 2x white matter there), so it is not reliably told
    from one, and a PD map (~1.3x) is not told from a scan at all. Real images of the sample at 60 random SE/IR
    protocols, noise-free or at SNR 20-100 with bias, reach at most 0.77 of what is allowed."""
    values = image[_head(image)]
    if values.size < 100:
        raise InputError(f"{what}: almost no signal above its background")
    top = float(values[values >= np.quantile(values, 1 - _TOP_SHARE)].mean())
    ratio = top / max(float(np.median(values)), 1e-12)
    allowed = max(_FLOOR, _MARGIN * tissue_ratio(protocol, tuple(TISSUES)))
    if ratio > allowed:
        raise InputError(f"{what}: its brightest voxels are {ratio:.1f}x the head's median, more than a "
                         f"{protocol.sequence.upper()} scan at {protocol.caption()} shows any tissue ({allowed:.1f}x): is "
                         "this a T1 or T2 map, or another contrast?")


def check_not_labels(image: np.ndarray, what: str = "the scan") -> None:
    """Refuse a label map (a segmentation) given as a scan: integer values, few of them (FreeSurfer's aseg has ~50),
    and piecewise constant (the sample's labels: 83 % of neighbouring head voxels equal; its T1 map 11 %, a noisy scan
    fewer; a scan stored as 8-bit integers has few values but is not flat)."""
    head = image > 0
    values = image[head]
    if values.size == 0 or not np.array_equal(values, np.round(values)) or np.unique(values).size > _LABEL_VALUES:
        return
    pairs = head[..., 1:] & head[..., :-1]
    flat = float(np.count_nonzero((image[..., 1:] == image[..., :-1]) & pairs)) / max(int(pairs.sum()), 1)
    if flat >= _LABEL_FLAT:
        raise InputError(f"{what}: {np.unique(values).size} integer values in patches ({100 * flat:.0f} % of neighbours "
                         "equal): a label map, not a scan")


def load_scan(path: PathLike, sequence: Optional[str] = None, values: Optional[Mapping[str, Optional[float]]] = None,
              sidecar: Optional[PathLike] = None) -> WeightedScan:
    """Read and check a weighted scan; ``sequence`` and ``values`` (``tr``/``te``/``ti`` ms, ``None`` = not
    given) win over the sidecar (``sidecar``, else the one beside the image)."""
    path = Path(path)
    given = {k: float(v) for k, v in (values or {}).items() if v is not None}
    json_path = Path(sidecar) if sidecar else sidecar_path(path)
    if sidecar and not json_path.is_file():
        raise InputError(f"{json_path}: no such sidecar")
    notes = []
    if json_path.is_file():
        data = read_json(json_path)
        from_file = read_sidecar(json_path, ("tr", "te", "ti"), skip=given)
        if sequence is None:
            sequence = _sequence_from(data, json_path)
        if from_file:
            notes.append(f"{', '.join(k.upper() for k in sorted(from_file))} from {json_path.name}")
        given = {**from_file, **given}
    if sequence is None:
        raise InputError(f"{path}: the scan's sequence is not known; give --sequence ({'/'.join(SCAN_SEQUENCES)}) "
                         "and its --tr/--te (--ti), or a BIDS sidecar")
    missing = [n for n in ("tr", "te") + (("ti",) if sequence == "ir" else ()) if n not in given]
    if missing:
        raise InputError(f"{path}: missing {', '.join(n.upper() for n in missing)} (ms); give --{missing[0]} or a "
                         "JSON sidecar with it")
    if sequence != "ir" and "ti" in given:
        raise InputError(f"{path}: a {sequence.upper()} scan takes no TI")
    protocol = check_scan(Protocol(sequence, given["tr"], given["te"], given.get("ti")), "the input scan")
    volume = read_volume(path)
    check_image(volume, path, "input")
    array = np.clip(np.asarray(volume.array, np.float32), 0, None)  # magnitude
    check_not_labels(array, f"input {path}")
    check_not_a_map(array, protocol, f"input {path}")
    return WeightedScan(volume.with_array(array), protocol, tuple(notes))
