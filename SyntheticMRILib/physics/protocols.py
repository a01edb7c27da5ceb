"""Sequences, protocols, their physical bounds and the named clinical presets: the catalogue.

A :class:`Protocol` is a sequence name plus its TR/TE/TI/flip. This module is
the one place for what a sequence takes, the range of every parameter, the
shortest times each sequence can run (:data:`MINIMA`) and the rule TE < TR,
TI < TR, TI2 < TI: :meth:`Protocol.validate` (every command),
:func:`parameter_bounds` (the GUI sliders) and the learned contrasts
(:data:`LEARNABLE_RANGES`) all read it. Times typed in seconds fall below the
minima; the refusal then gives the milliseconds meant. It imports no torch, so
the Slicer GUI can draw presets and sliders before PyTorch is installed; the signal equation of
each sequence is in :mod:`SyntheticMRILib.physics.synthesis`. Presets are the
contrasts a radiologist expects from synthetic-MRI products (SyMRI, MAGiC);
their inversion times are computed as null points of the 3 T tissue table, not
typed in.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..errors import InputError
from .nulls import double_ir_null_tis, null_ti
from .tissues import DEFAULT_FIELD_T, relaxation

__all__ = [
    "Protocol", "SEQUENCES", "PARAMETERS", "RANGES", "MINIMA", "minimum", "ORDER", "GAP_MS", "LEARNABLE_RANGES",
    "NULLED_IR", "Preset",
    "PRESETS", "preset", "protocol_from_args", "parameter_bounds", "clamp_parameters", "protocol_from_values",
    "preset_values", "START_CONTRAST", "start_values", "contrast_description",
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
# to 20 s; inversion times up to where a learned contrast may take them. The lower ends are those of any
# sequence; each sequence raises them in MINIMA.
RANGES: Dict[str, Tuple[float, float]] = {
    "tr": (3.0, 20000.0),
    "te": (0.0, 1000.0),
    "ti": (2.0, 15000.0),
    "ti2": (1.0, 15000.0),
    "flip": (1.0, 180.0),
}
# The shortest times (ms) each sequence can run, above RANGES: below them no scanner plays the sequence, and a
# time typed in seconds (TE 0.01 for 10 ms, TI 2.4 for 2400 ms) lands there. TE: a spin-echo readout (SE, and
# the IR family, whose readout is a spin echo) needs an excitation and a refocusing pulse, each ~1-3 ms
# slice-selective on a whole-body scanner, with crusher gradients around the refocusing pulse: clinical minima
# are 5-10 ms, 3 ms is below any. A spoiled gradient echo needs only the excitation and a (fractional) echo:
# ~1 ms at best (ultrashort-TE sequences are not this equation). TI, from the centre of the inversion pulse
# (2-12 ms, adiabatic ones the longest) to the centre of the excitation, includes half of it and a spoiler:
# no inversion-recovery protocol uses less than 10 ms (STIR at low field, the shortest clinical TI, is ~100 ms);
# the same for TI2, the second inversion to the readout. TR stays at RANGES' 3 ms: a spin echo's TR is bounded
# by TE < TR. LEARNABLE_RANGES and the presets lie above these (tested).
_SPIN_ECHO_TE_MS = 3.0
MINIMA: Dict[str, Dict[str, float]] = {
    "se": {"te": _SPIN_ECHO_TE_MS},
    "ir": {"te": _SPIN_ECHO_TE_MS, "ti": 10.0},
    "psir": {"te": _SPIN_ECHO_TE_MS, "ti": 10.0},
    "dir": {"te": _SPIN_ECHO_TE_MS, "ti": 10.0, "ti2": 10.0},
    "dsir": {"te": _SPIN_ECHO_TE_MS, "ti": 10.0, "ti2": 10.0},
    "gre": {"te": 1.0},
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
_TIMES = ("tr", "te", "ti", "ti2")


def _takes(sequence: str, name: str) -> bool:
    return name in ("tr", "te") or name in SEQUENCES[sequence].needs


def minimum(name: str, sequence: Optional[str] = None) -> float:
    """The smallest value of parameter ``name`` that :meth:`Protocol.validate` accepts for ``sequence``
    (:data:`RANGES` raised by :data:`MINIMA`); with no sequence, the smallest over the sequences that take it."""
    low = RANGES[name][0]
    if sequence is None:
        return min(minimum(name, s) for s in SEQUENCES if _takes(s, name))
    return max(low, MINIMA.get(sequence, {}).get(name, low))


def _clinical(sequence: str) -> Dict[str, Tuple[float, float]]:
    """Clinical ranges of ``sequence`` (:data:`LEARNABLE_RANGES`; dSIR's inversions are like double IR's)."""
    if sequence in LEARNABLE_RANGES:
        return LEARNABLE_RANGES[sequence]
    return {**LEARNABLE_RANGES["dir"], **{k: LEARNABLE_RANGES["ir"][k] for k in ("tr", "te")}}


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
        """Raise :class:`InputError` unless the parameters are physically possible (:data:`RANGES`,
        :data:`MINIMA`, :data:`ORDER`); times that look typed in seconds are refused with the ms meant."""
        return self._validate()

    def _validate(self, derive: Optional[Callable[["Protocol"], "Protocol"]] = None,
                  derived: Tuple[str, ...] = ()) -> "Protocol":
        """:meth:`validate`, for a protocol some of whose times (``derived``) follow from the others through
        ``derive`` (the default TI of FLAIR and STIR follows TR): those are recomputed, not rescaled, in the advice."""
        problem, short = self._problem(derived)
        if problem is None:
            return self
        meant = self._meant_in_ms(short, derive, derived)
        if meant:
            problem += "; if you meant seconds, that is " + " ".join(f"--{n} {v:g}" for n, v in meant.items())
        raise InputError(problem)

    def _problem(self, derived: Tuple[str, ...] = ()) -> Tuple[Optional[str], List[str]]:
        """The first reason the protocol is not possible (``None`` if it is), and the times below their minima
        (``derived`` ones are said to be defaults)."""
        if self.sequence not in SEQUENCES:
            return f"unknown sequence {self.sequence!r}; choose one of: {', '.join(SEQUENCES)}", []
        spec = SEQUENCES[self.sequence]
        for name in ("ti", "ti2", "flip"):
            given = getattr(self, name) is not None
            if name in spec.needs and not given:
                return f"sequence {self.sequence!r} needs --{name}", []
            if given and name not in spec.needs:
                return f"sequence {self.sequence!r} takes no --{name}", []
        short = []
        for name in PARAMETERS:
            value = getattr(self, name)
            if value is None:
                continue
            low, high = minimum(name, self.sequence), RANGES[name][1]
            if name in _TIMES and 0 < value < low:
                short.append(name)  # typed in seconds, most likely
            elif not low <= value <= high:  # NaN too
                return f"{_NAMES[name]} must be in [{low:g}, {high:g}] {_UNITS[name]}, got {value:g}", []
        if short:
            values = " and ".join(f"{_NAMES[n]} {getattr(self, n):.4g} ms" + (" (its default at this TR)" * (n in derived))
                                  for n in short)
            lows = ", ".join(f"{_NAMES[n]} >= {minimum(n, self.sequence):g} ms" for n in short)
            verb = "is" if len(short) == 1 else "are"
            return f"{values} {verb} below what sequence {self.sequence!r} can do ({lows})", short
        for name, bound in ORDER.items():
            value = getattr(self, name)
            if value is not None and not value < getattr(self, bound):
                return (f"{_NAMES[name]} must be below {_NAMES[bound]}, got {_NAMES[name]} {value:g} ms, "
                        f"{_NAMES[bound]} {getattr(self, bound):g} ms"), []
        return None, []

    def _meant_in_ms(self, short: List[str], derive, derived: Tuple[str, ...]) -> Dict[str, float]:
        """The times meant if some were typed in seconds: the fewest given times (all of those below their
        minima among them) that, multiplied by 1000, make a valid and clinical protocol (:data:`LEARNABLE_RANGES`),
        by name; empty unless exactly one such choice exists."""
        if self.sequence not in SEQUENCES:
            return {}
        given = [n for n in _TIMES if getattr(self, n) is not None and n not in derived]
        if not all(isinstance(getattr(self, n), numbers.Real) for n in given):
            return {}
        must = set(short) - set(derived)
        for size in range(max(1, len(must)), len(given) + 1):
            found = []
            for names in combinations(given, size):
                if not must <= set(names):
                    continue
                meant = {n: float(getattr(self, n)) * 1000.0 for n in names}
                candidate = replace(self, **meant)
                if derive is not None:
                    candidate = derive(candidate)
                if candidate._problem()[0] is None and candidate._is_clinical():
                    found.append(meant)
            if found:
                return found[0] if len(found) == 1 else {}
        return {}

    def _is_clinical(self) -> bool:
        ranges = _clinical(self.sequence)
        for name in _TIMES:
            value = getattr(self, name)
            if value is None or name not in ranges:
                continue
            low, high = ranges[name]
            if name in ORDER and name != "te":  # TI and TI2: the upper value is a fraction of TR and TI
                high *= getattr(self, ORDER[name])
            if not low <= value <= high:
                return False
        return True

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
    field: float = DEFAULT_FIELD_T,
) -> Protocol:
    """A validated protocol from command-line style arguments.

    ``flair`` and ``stir`` are inversion recovery with TI, when not given, at
    the null point of CSF or fat for the chosen TR at ``field`` tesla.
    """
    derive, derived = None, ()
    if sequence in NULLED_IR:
        if ti is None and tr > 0:
            t1 = relaxation(NULLED_IR[sequence], field).t1
            derive, derived = (lambda p: replace(p, ti=null_ti(t1, p.tr))), ("ti",)
            ti = null_ti(t1, tr)
        sequence = "ir"
    return Protocol(sequence, tr, te, ti, ti2, flip)._validate(derive, derived)


def parameter_bounds(tr: float, ti: float, sequence: Optional[str] = None) -> Dict[str, Tuple[float, float]]:
    """The (minimum, maximum) of each parameter for a given TR and TI: :data:`RANGES`, with TE and TI kept
    :data:`GAP_MS` below TR and TI2 below TI (:data:`ORDER`).

    With ``sequence``, the minima are that sequence's (:func:`minimum`), raised where needed so that every
    value inside the bounds makes a protocol :meth:`Protocol.validate` accepts (TR above TE's and TI's minima,
    TI above TI2's). Without, they are the smallest any sequence takes: a value there may be refused by the
    sequence chosen.
    """
    given = {"tr": tr, "ti": ti}
    lows = {name: minimum(name, sequence) for name in RANGES}
    if sequence is not None:
        if _takes(sequence, "ti2"):
            lows["ti"] = max(lows["ti"], lows["ti2"] + GAP_MS)
        lows["tr"] = max(lows["tr"], lows["te"] + GAP_MS, lows["ti"] + GAP_MS if _takes(sequence, "ti") else 0.0)
    bounds = {}
    for name, (_low, high) in RANGES.items():
        if name in ORDER:
            high = min(high, given[ORDER[name]] - GAP_MS)
        bounds[name] = (lows[name], high)
    return bounds


def clamp_parameters(values: Mapping[str, float], sequence: Optional[str] = None) -> Dict[str, float]:
    """``values`` (all of :data:`PARAMETERS`) moved inside their bounds (:func:`parameter_bounds`, of
    ``sequence`` when given); TR first, then TI, then the rest, since each bound depends only on the values
    clamped before it."""
    clamped = {name: float(value) for name, value in values.items()}
    for name in ("tr", "ti", "te", "ti2", "flip"):
        low, high = parameter_bounds(clamped["tr"], clamped["ti"], sequence)[name]
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


START_CONTRAST = "T2-FLAIR"  # what the GUIs (Slicer module, web app) open on


def start_values() -> Dict[str, float]:
    """Every GUI parameter's first value: the :data:`START_CONTRAST` preset, and TI2 and the flip angle from the
    presets that take them (DIR, T1w-GRE), so that switching to a custom DIR or GRE starts somewhere sensible."""
    return {**preset_values("DIR"), **preset_values("T1w-GRE"), **preset_values(START_CONTRAST)}


def contrast_description(name: str) -> str:
    """One line on what a preset (by name) or a sequence (by key, e.g. ``"ir"``) shows."""
    if name in PRESETS:
        text = f"{PRESETS[name].shows}. {PRESETS[name].source}."
    else:
        text = SEQUENCES[name].description + "."
    return text[:1].upper() + text[1:]
