"""A weighted scan's protocol from the text of its DICOM tags, as Slicer's DICOM database gives them
(``fileValue``: "" when a tag is absent, several values joined by backslashes). Torch-free and Slicer-free: the
Slicer module reads the tags (:meth:`SyntheticMRILib.slicer.logic.SyntheticMRILogic.protocolFromDicom`), this
parses them.

:func:`scanning_sequence` is the rule for DICOM tags and BIDS sidecars (:mod:`SyntheticMRILib.io.scan`) alike: a
gradient echo without spin echo is refused (an MPRAGE, GR\\IR, too: its inversion-prepared gradient-echo
train is not the magnitude IR the engines model), else inversion recovery when there is an InversionTime or
ScanningSequence (0018,0020) names IR, else a spin echo when there is a RepetitionTime or ScanningSequence SE.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Union

from ..errors import InputError

__all__ = ["DICOM_TAGS", "first_number", "scanning_sequence", "protocol_from_tags"]

# RepetitionTime, EchoTime, InversionTime (ms), ScanningSequence (SE, IR, GR, EP, RM; several joined by "\")
DICOM_TAGS = {"tr": "0018,0080", "te": "0018,0081", "ti": "0018,0082", "sequence": "0018,0020"}


def first_number(text: Optional[str]) -> Optional[float]:
    """The first value of a (multi-valued) DICOM number as a float; None when absent, unreadable or not above 0."""
    try:
        value = float(str(text).split("\\")[0])
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None  # NaN, 0 (some scanners write TI 0 on a spin echo) and below: not known


def scanning_sequence(kinds: Iterable[str], has_ti: bool, has_tr: bool) -> Optional[str]:
    """"se", "ir" or None (not known) from the ScanningSequence values ``kinds`` and whether an inversion time and a
    repetition time are given; a gradient echo (MPRAGE included) raises :class:`~SyntheticMRILib.errors.InputError`."""
    listed = [str(kind).strip().upper() for kind in kinds if str(kind).strip()]
    kinds = set(listed)
    if "GR" in kinds and "SE" not in kinds:
        mprage = ", an MPRAGE-like inversion-prepared one" if "IR" in kinds else ""
        raise InputError(f"a gradient-echo scan (ScanningSequence {chr(92).join(listed)}{mprage}); re-parameterization "
                         "takes spin-echo or inversion-recovery spin-echo scans")
    if has_ti or "IR" in kinds:
        return "ir"
    return "se" if has_tr or "SE" in kinds else None


def protocol_from_tags(values: Mapping[str, Optional[str]]) -> Dict[str, Union[str, float]]:
    """``sequence`` ("se" or "ir") and the ``tr``, ``te``, ``ti`` (ms) that ``values`` (tag text by the keys of
    :data:`DICOM_TAGS`) hold; {} when they hold neither a RepetitionTime nor a sequence. A gradient-echo scan
    raises :class:`~SyntheticMRILib.errors.InputError`: re-parameterization reads spin-echo and IR scans."""
    times = {name: first_number(values.get(name)) for name in ("tr", "te", "ti")}
    scanning = str(values.get("sequence") or "").strip()
    sequence = scanning_sequence(scanning.split("\\"), times["ti"] is not None, times["tr"] is not None)
    if sequence is None:
        return {}
    found: Dict[str, Union[str, float]] = {"sequence": sequence}
    found.update({name: value for name, value in times.items()
                  if value is not None and (name != "ti" or sequence == "ir")})
    return found
