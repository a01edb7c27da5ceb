"""Sequences, protocols, their physical bounds and the named clinical presets: the catalogue.

A :class:`Protocol` is a sequence name plus its TR/TE/TI/flip. This module is
the one place for what a sequence takes, the range of every parameter, and the
rule TE < TR, TI < TR, TI2 < TI: :meth:`Protocol.validate` (every command),
:func:`parameter_bounds` (the GUI sliders) and the learned contrasts
(:data:`LEARNABLE_RANGES`) all read it. It imports no torch, so the Slicer GUI
can draw presets and sliders before PyTorch is installed; the signal equation of
each sequence is in :mod:`SyntheticMRILib.physics.synthesis`. Presets are the
contrasts a radiologist expects from synthetic-MRI products (SyMRI, MAGiC);
their inversion times are computed as null points of the 3 T tissue table, not
typed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import InputError
from .nulls import double_ir_null_tis, null_ti
from .tissues import relaxation

__all__ = [
    "Protocol", "SEQUENCES", "PARAMETERS", "RANGES", "ORDER", "GAP_MS", "LEARNABLE_RANGES", "NULLED_IR", "Preset",
    "PRESETS", "preset", "protocol_from_args", "parameter_bounds", "clamp_parameters", "protocol_from_values",
    "preset_values", "contrast_description",
]


@dataclass(frozen=True)
class Sequence:
    """What a sequence is and which parameters it takes besides TR and TE."""

    description: str
    needs: Tuple[str, ...]


SEQUENCES: Dict[str, Sequence] = {
    "se": Sequence("spin echo", ()),
    "ir": Sequence("inversion recovery, magnitude", ("ti",)),
    "psir": Sequence("phase-sensitive inversion recovery (signed)", ("ti",)),
    "dir": Sequence("double inversion recovery (TI > TI2)", ("ti", "ti2")),
    "gre": Sequence("spoiled gradient echo (T2 stands in for T2*)", ("flip",)),
    "dsir": Sequence("divided subtracted IR, in [-1, 1] (TI long, TI2 short)", ("ti", "ti2")),
}

PARAMETERS = ("tr", "te", "ti", "ti2", "flip")  # times in ms, flip in degrees

# What a protocol may hold (ms, degrees), and the span of the GUI sliders. TR from 3 ms (fast gradient echo)
# to 20 s; TE from 0 (the ideal FID); inversion times up to where a learned contrast may take them.
RANGES: Dict[str, Tuple[float, float]] = {
    "tr": (3.0, 20000.0),
    "te": (0.0, 1000.0),
    "ti": (2.0, 15000.0),
    "ti2": (1.0, 15000.0),
    "flip": (1.0, 180.0),
}
# Each of these parameters stays below the one named: TE < TR, TI < TR, TI2 < TI.
ORDER: Dict[str, str] = {"te": "tr", "ti": "tr", "ti2": "ti"}
GAP_MS = 1.0  # how far below its bound the GUI keeps a parameter (the rule is strict)

# Where learned contrasts may search (ms, degrees): clinical ranges per sequence, inside RANGES. TE is also
# at most TR/2 (an echo later leaves no time for the rest of the sequence); for TI and TI2 the upper value
# is a fraction of TR and TI. Changing a value changes what a trained model's parameters mean.
LEARNABLE_RANGES: Dict[str, Dict[str, Tuple[float, float]]] = {
    "se": {"tr": (200.0, 12000.0), "te": (5.0, 250.0)},
    "ir": {"tr": (1000.0, 12000.0), "te": (5.0, 250.0), "ti": (20.0, 0.95)},
    "psir": {"tr": (1000.0, 12000.0), "te": (5.0, 250.0), "ti": (20.0, 0.95)},
    "dir": {"tr": (2000.0, 12000.0), "te": (5.0, 250.0), "ti": (40.0, 0.95), "ti2": (20.0, 0.95)},
    "gre": {"tr": (3.0, 100.0), "te": (1.5, 20.0), "flip": (1.0, 90.0)},
}
LEARNABLE_TE_FRACTION_OF_TR = 0.5

# CLI shortcuts: an IR whose TI defaults to the null point of a tissue at the chosen TR.
NULLED_IR = {"flair": "csf", "stir": "fat"}

_NAMES = {"tr": "TR", "te": "TE", "ti": "TI", "ti2": "TI2", "flip": "flip angle"}
_UNITS = {"tr": "ms", "te": "ms", "ti": "ms", "ti2": "ms", "flip": "degrees"}


@dataclass(frozen=True)
class Protocol:
    """A sequence and its parameters: times in ms, flip in degrees.

    ``ti`` is the inversion time (the longer one, TI1, for double IR and dSIR),
    ``ti2`` the second, shorter one. Parameters may be tensors (learned contrasts);
    :meth:`validate` is for float protocols.
    """

    sequence: str
    tr: Any
    te: Any
    ti: Any = None
    ti2: Any = None
    flip: Any = None

    def validate(self) -> "Protocol":
        """Raise :class:`InputError` unless the parameters are physically possible (:data:`RANGES`, :data:`ORDER`)."""
        if self.sequence not in SEQUENCES:
            raise InputError(f"unknown sequence {self.sequence!r}; choose one of: {', '.join(SEQUENCES)}")
        spec = SEQUENCES[self.sequence]
        for name in ("ti", "ti2", "flip"):
            given = getattr(self, name) is not None
            if name in spec.needs and not given:
                raise InputError(f"sequence {self.sequence!r} needs --{name}")
            if given and name not in spec.needs:
                raise InputError(f"sequence {self.sequence!r} takes no --{name}")
        for name in PARAMETERS:
            value = getattr(self, name)
            if value is None:
                continue
            low, high = RANGES[name]
            if not low <= value <= high:
                raise InputError(f"{_NAMES[name]} must be in [{low:g}, {high:g}] {_UNITS[name]}, got {value:g}")
            bound = ORDER.get(name)
            if bound is not None and not value < getattr(self, bound):
                raise InputError(f"{_NAMES[name]} must be below {_NAMES[bound]}, got {_NAMES[name]} {value:g} ms, "
                                 f"{_NAMES[bound]} {getattr(self, bound):g} ms")
        return self

    def values(self) -> Dict[str, float]:
        """The parameters the protocol holds, by name (``tr``, ``te`` and those of its sequence)."""
        return {name: getattr(self, name) for name in PARAMETERS if getattr(self, name) is not None}

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
            ti = null_ti(relaxation(NULLED_IR[sequence], field).t1, tr)
        sequence = "ir"
    return Protocol(sequence, tr, te, ti, ti2, flip).validate()


def parameter_bounds(tr: float, ti: float) -> Dict[str, Tuple[float, float]]:
    """The (minimum, maximum) of each parameter for a given TR and TI: :data:`RANGES`, with TE and TI kept
    :data:`GAP_MS` below TR and TI2 below TI (:data:`ORDER`)."""
    given = {"tr": tr, "ti": ti}
    bounds = {}
    for name, (low, high) in RANGES.items():
        if name in ORDER:
            high = min(high, given[ORDER[name]] - GAP_MS)
        bounds[name] = (low, high)
    return bounds


def clamp_parameters(values: Mapping[str, float]) -> Dict[str, float]:
    """``values`` (all of :data:`PARAMETERS`) moved inside their bounds; TR first, then TI, then the rest,
    since each bound depends only on the values clamped before it."""
    clamped = {name: float(value) for name, value in values.items()}
    for name in ("tr", "ti", "te", "ti2", "flip"):
        low, high = parameter_bounds(clamped["tr"], clamped["ti"])[name]
        clamped[name] = min(max(clamped[name], low), high)
    return clamped


def protocol_from_values(sequence: str, values: Mapping[str, Optional[float]]) -> Protocol:
    """The validated protocol of ``sequence`` from a full set of values (the GUI's sliders: ms, degrees).

    ``values`` holds ``tr``, ``te`` and any of ``ti``, ``ti2``, ``flip``: those the sequence does not
    take are dropped (hidden sliders keep their last values); those it takes must be there.
    Unphysical values raise :class:`~SyntheticMRILib.errors.InputError`.
    """
    needs = SEQUENCES[sequence].needs if sequence in SEQUENCES else ()
    optional = {
        name: float(values[name]) if name in needs and values.get(name) is not None else None
        for name in ("ti", "ti2", "flip")
    }
    return Protocol(sequence, float(values["tr"]), float(values["te"]), **optional).validate()


@dataclass(frozen=True)
class Preset:
    """A named clinical contrast: a protocol, what it shows, and where its numbers come from."""

    name: str
    protocol: Protocol
    shows: str
    source: str


def _null(tissue: str, tr: float) -> float:
    return round(null_ti(relaxation(tissue).t1, tr))


def _dir_nulls(a: str, b: str, tr: float) -> Tuple[float, float]:
    ti1, ti2 = double_ir_null_tis(relaxation(a).t1, relaxation(b).t1, tr)
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


def preset_values(name: str) -> Dict[str, float]:
    """The parameter values of a preset (case-insensitive name): TR, TE and those its sequence takes."""
    return {key: float(value) for key, value in preset(name).protocol.values().items()}


def contrast_description(name: str) -> str:
    """One line on what a preset (by name) or a sequence (by key, e.g. ``"ir"``) shows."""
    if name in PRESETS:
        text = f"{PRESETS[name].shows}. {PRESETS[name].source}."
    else:
        text = SEQUENCES[name].description + "."
    return text[:1].upper() + text[1:]
