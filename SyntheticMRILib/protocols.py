"""Sequences, protocols and the named clinical presets.

A :class:`Protocol` is a sequence name plus its TR/TE/TI/flip; each sequence
names its signal equation in :mod:`SyntheticMRILib.physics`, and
:mod:`SyntheticMRILib.synthesis` runs them. Presets are the contrasts a radiologist expects
from synthetic-MRI products (SyMRI, MAGiC); their inversion times are computed
as null points of the 3 T tissue table, not typed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from . import physics
from .errors import InputError
from .tissues import relaxation

__all__ = ["Protocol", "SEQUENCES", "Preset", "PRESETS", "preset", "protocol_from_args"]


@dataclass(frozen=True)
class _Sequence:
    description: str
    needs: Tuple[str, ...]  # parameters besides TR and TE
    signal: Callable[..., torch.Tensor]


SEQUENCES: Dict[str, _Sequence] = {
    "se": _Sequence("spin echo", (), lambda m, p: physics.spin_echo(*m, p.tr, p.te)),
    "ir": _Sequence("inversion recovery, magnitude", ("ti",), lambda m, p: physics.inversion_recovery(*m, p.tr, p.te, p.ti)),
    "psir": _Sequence(
        "phase-sensitive inversion recovery (signed)",
        ("ti",),
        lambda m, p: physics.inversion_recovery(*m, p.tr, p.te, p.ti, phase_sensitive=True),
    ),
    "dir": _Sequence(
        "double inversion recovery (TI > TI2)",
        ("ti", "ti2"),
        lambda m, p: physics.double_inversion_recovery(*m, p.tr, p.te, p.ti, p.ti2),
    ),
    "gre": _Sequence(
        "spoiled gradient echo (T2 stands in for T2*)",
        ("flip",),
        lambda m, p: physics.spoiled_gradient_echo(*m, p.tr, p.te, p.flip),
    ),
    "dsir": _Sequence(
        "divided subtracted IR, in [-1, 1] (TI long, TI2 short)",
        ("ti", "ti2"),
        lambda m, p: physics.divided_subtracted_ir(*m, p.tr, p.te, p.ti, p.ti2),
    ),
}

# CLI shortcuts: an IR whose TI defaults to the null point of a tissue at the chosen TR.
NULLED_IR = {"flair": "csf", "stir": "fat"}


@dataclass(frozen=True)
class Protocol:
    """A sequence and its parameters: times in ms, flip in degrees.

    ``ti`` is the inversion time (the longer one, TI1, for double IR and dSIR),
    ``ti2`` the second, shorter one.
    """

    sequence: str
    tr: float
    te: float
    ti: Optional[float] = None
    ti2: Optional[float] = None
    flip: Optional[float] = None

    def validate(self) -> "Protocol":
        """Raise :class:`InputError` unless the parameters are physically possible."""
        if self.sequence not in SEQUENCES:
            raise InputError(f"unknown sequence {self.sequence!r}; choose one of: {', '.join(SEQUENCES)}")
        spec = SEQUENCES[self.sequence]
        for name in ("ti", "ti2", "flip"):
            given = getattr(self, name) is not None
            if name in spec.needs and not given:
                raise InputError(f"sequence {self.sequence!r} needs --{name}")
            if given and name not in spec.needs:
                raise InputError(f"sequence {self.sequence!r} takes no --{name}")
        if not self.tr > 0:
            raise InputError(f"TR must be > 0 ms, got {self.tr:g}")
        if not 0 <= self.te < self.tr:
            raise InputError(f"TE must satisfy 0 <= TE < TR, got TE {self.te:g} ms, TR {self.tr:g} ms")
        if self.ti is not None and not 0 < self.ti < self.tr:
            raise InputError(f"TI must satisfy 0 < TI < TR, got TI {self.ti:g} ms, TR {self.tr:g} ms")
        if self.ti2 is not None and not 0 < self.ti2 < self.ti:
            raise InputError(f"TI2 must satisfy 0 < TI2 < TI, got TI2 {self.ti2:g} ms, TI {self.ti:g} ms")
        if self.flip is not None and not 0 < self.flip <= 180:
            raise InputError(f"flip angle must be in (0, 180] degrees, got {self.flip:g}")
        return self

    def caption(self) -> str:
        """``TR 500 TE 10`` and so on, for figure captions."""
        parts = [f"TR {round(float(self.tr), 1):g}", f"TE {round(float(self.te), 1):g}"]  # 0.1 ms: what a console shows
        if self.ti is not None:
            parts.append(f"TI {self.ti:.0f}")
        if self.ti2 is not None:
            parts.append(f"TI2 {self.ti2:.0f}")
        if self.flip is not None:
            parts.append(f"FA {round(float(self.flip), 1):g}°")
        return " ".join(parts)


def protocol_from_args(
    sequence: str,
    tr: float,
    te: float,
    ti: Optional[float] = None,
    ti2: Optional[float] = None,
    flip: Optional[float] = None,
    field: float = 3.0,
) -> Protocol:
    """A validated protocol from command-line style arguments.

    ``flair`` and ``stir`` are inversion recovery with TI, when not given, at
    the null point of CSF or fat for the chosen TR at ``field`` tesla.
    """
    if sequence in NULLED_IR:
        if ti is None and tr > 0:
            ti = float(physics.null_ti(relaxation(NULLED_IR[sequence], field).t1, tr))
        sequence = "ir"
    return Protocol(sequence, tr, te, ti, ti2, flip).validate()


@dataclass(frozen=True)
class Preset:
    """A named clinical contrast: a protocol, what it shows, and where its numbers come from."""

    name: str
    protocol: Protocol
    shows: str
    source: str


def _null(tissue: str, tr: float) -> float:
    return round(float(physics.null_ti(relaxation(tissue).t1, tr)))


def _dir_nulls(a: str, b: str, tr: float) -> Tuple[float, float]:
    ti1, ti2 = physics.double_ir_null_tis(relaxation(a).t1, relaxation(b).t1, tr)
    return round(ti1), round(ti2)


_MAGIC = "typical 3 T clinical values, cf. synthetic-MRI defaults (Tanenbaum 2017; Hagiwara 2017)"
_DIR_TI = _dir_nulls("csf", "cerebral_wm", 7500)

PRESETS: Dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("T1w", Protocol("se", 500, 10), "anatomy; fat and WM bright, CSF dark", _MAGIC),
        Preset("T2w", Protocol("se", 4500, 100), "oedema and CSF bright", _MAGIC),
        Preset("PDw", Protocol("se", 4000, 10), "proton density; GM slightly brighter than WM", _MAGIC),
        Preset(
            "T2-FLAIR",
            Protocol("ir", 9000, 90, _null("csf", 9000)),
            "T2w with CSF nulled: periventricular lesions",
            "TI = CSF null at TR 9000; TR/TE typical of 3 T FLAIR (Tanenbaum 2017)",
        ),
        Preset(
            "T1-FLAIR",
            Protocol("ir", 2500, 10, _null("csf", 2500)),
            "T1w with CSF nulled, strong GM/WM contrast",
            "TI = CSF null at TR 2500, as 3 T T1-FLAIR (Lu 2005)",
        ),
        Preset(
            "STIR",
            Protocol("ir", 5000, 60, _null("fat", 5000)),
            "fat suppressed T2-like contrast: scalp, orbit, spine",
            "TI = fat null at TR 5000 (Bydder & Young 1985)",
        ),
        Preset(
            "PSIR",
            Protocol("psir", 5000, 10, round((_null("cerebral_wm", 5000) + _null("cortex", 5000)) / 2)),
            "signed IR, WM > 0 > GM > CSF: grey/white contrast, cortical lesions",
            "TI midway between the WM and GM nulls at TR 5000 (cf. Sethi 2012)",
        ),
        Preset(
            "DIR",
            Protocol("dir", 7500, 25, *_DIR_TI),
            "grey matter only: CSF and WM both nulled; cortical lesions",
            "TI1/TI2 = joint CSF+WM null at TR 7500 (Redpath & Smith 1994; Geurts 2005)",
        ),
        Preset(
            "WM-nulled",
            Protocol("ir", 5000, 10, _null("cerebral_wm", 5000)),
            "WM black: thalamic nuclei and deep grey matter stand out",
            "TI = WM null at TR 5000 (Tourdias 2014 WMn-MPRAGE idea)",
        ),
        Preset(
            "GM-nulled",
            Protocol("ir", 5000, 10, _null("cortex", 5000)),
            "GM black: white-matter tracts and lesions in WM",
            "TI = GM null at TR 5000 (Redpath & Smith 1994: either tissue can be nulled)",
        ),
        Preset(
            "dSIR",
            Protocol("dsir", 5000, 10, _null("cortex", 5000), _null("cerebral_wm", 5000)),
            "T1 only, steep between WM (-1) and GM (+1): subtle WM disease",
            "TIs = WM and GM nulls at TR 5000 (Ma et al. 2020, MASTIR)",
        ),
        Preset(
            "T1w-GRE",
            Protocol("gre", 20, 4, flip=25),
            "spoiled gradient echo (FLASH/SPGR) T1 weighting",
            "FLASH TR 20 / FA 25 (Bernstein 2004 §14.1); T2 stands in for T2*",
        ),
    )
}


def preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive), or :class:`InputError`."""
    by_lower = {k.lower(): v for k, v in PRESETS.items()}
    if name.lower() not in by_lower:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return by_lower[name.lower()]
