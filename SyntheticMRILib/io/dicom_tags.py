"""A weighted scan's protocol from the text of its DICOM tags, as Slicer's DICOM database gives them
(``fileValue``: "" when a tag is absent, several values joined by backslashes). Torch-free and Slicer-free: the
Slicer module reads the tags (:meth:`SyntheticMRILib.slicer.logic.SyntheticMRILogic.protocolFromDicom`), this
parses them.

The sequence follows the rule of a BIDS sidecar (:mod:`SyntheticMRILib.io.scan`): inversion recovery when the
instance has an InversionTime or ScanningSequence (0018,0020) names IR, a gradient echo without spin echo is
refused, anything else with a RepetitionTime (or ScanningSequence SE) is a spin echo.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

from ..errors import InputError

__all__ = ["DICOM_TAGS", "first_number", "protocol_from_tags"]

# RepetitionTime, EchoTime, InversionTime (ms), ScanningSequence (SE, IR, GR, EP, RM; several joined by "\")
DICOM_TAGS = {"tr": "0018,0080", "te": "0018,0081", "ti": "0018,0082", "sequence": "0018,0020"}


def first_number(text: Optional[str]) -> Optional[float]:
    """The first value of a (multi-valued) DICOM number as a float; None when absent, unreadable or not above 0."""
    try:
        value = float(str(text).split("\\")[0])
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None  # NaN, 0 (some scanners write TI 0 on a spin echo) and below: not known


def protocol_from_tags(values: Mapping[str, Optional[str]]) -> Dict[str, Union[str, float]]:
    """``sequence`` ("se" or "ir") and the ``tr``, ``te``, ``ti`` (ms) that ``values`` (tag text by the keys of
    :data:`DICOM_TAGS`) hold; {} when they hold neither a RepetitionTime nor a sequence. A gradient-echo scan
    raises :class:`~SyntheticMRILib.errors.InputError`: re-parameterization reads spin-echo and IR scans."""
    times = {name: first_number(values.get(name)) for name in ("tr", "te", "ti")}
    scanning = str(values.get("sequence") or "").strip()
    kinds = {kind.strip().upper() for kind in scanning.split("\\") if kind.strip()}
    if times["ti"] is not None or "IR" in kinds:
        sequence = "ir"
    elif "GR" in kinds and "SE" not in kinds:
        raise InputError(f"a gradient-echo scan (ScanningSequence {scanning}); re-parameterization takes spin-echo or "
                         "inversion-recovery scans")
    elif times["tr"] is not None or "SE" in kinds:
        sequence = "se"
    else:
        return {}
    found: Dict[str, Union[str, float]] = {"sequence": sequence}
    found.update({name: value for name, value in times.items()
                  if value is not None and (name != "ti" or sequence == "ir")})
    return found
