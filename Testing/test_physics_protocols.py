"""The catalogue (SyntheticMRILib.physics.protocols): sequences, bounds, presets, GUI values; no torch needed.

The null points the presets use are checked against the signal equations in test_physics.py.
"""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.physics.protocols import (
    GAP_MS, LEARNABLE_RANGES, LEARNABLE_TE_FRACTION_OF_TR, ORDER, PARAMETERS, PRESETS, RANGES, SEQUENCES, Protocol,
    clamp_parameters, contrast_description, parameter_bounds, preset_values, protocol_from_values,
)


def test_the_catalogue_and_the_package_import_without_torch():
    code = ("import sys, SyntheticMRILib, SyntheticMRILib.physics.protocols, SyntheticMRILib.devices; "
            "print(sorted(m for m in ('torch', 'numpy', 'SimpleITK', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_face_loads_its_names_on_first_use():
    import SyntheticMRILib as smri

    assert smri.preset("t2-flair") is PRESETS["T2-FLAIR"] and smri.Protocol is Protocol
    assert set(smri.__all__) <= set(dir(smri))
    with pytest.raises(AttributeError):
        smri.not_a_name


def test_every_sequence_has_its_signal_equation():
    from SyntheticMRILib.physics.synthesis import SIGNALS

    assert set(SIGNALS) == set(SEQUENCES)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_inside_the_slider_bounds(name):
    protocol = PRESETS[name].protocol.validate()
    values = {key: 1.0 for key in PARAMETERS}  # hidden parameters: any physical value
    values["ti"], values["ti2"] = 3.0, 1.0
    values.update(protocol.values())
    clamped = clamp_parameters(values)
    for key, value in protocol.values().items():
        assert clamped[key] == float(value), f"{name}: {key} would be clipped by the GUI"


def test_bounds_keep_te_and_ti_below_tr_and_ti2_below_ti():
    values = clamp_parameters({"tr": 300.0, "te": 400.0, "ti": 2500.0, "ti2": 900.0, "flip": 200.0})
    assert values["te"] == values["ti"] == 300.0 - GAP_MS
    assert values["ti2"] == values["ti"] - GAP_MS
    assert values["flip"] == RANGES["flip"][1]
    lowest = clamp_parameters({"tr": 0.0, "te": 0.0, "ti": 0.0, "ti2": 0.0, "flip": 0.0})  # the minima stay consistent
    assert lowest["te"] < lowest["tr"] and 0 < lowest["ti2"] < lowest["ti"] < lowest["tr"]
    Protocol("dir", lowest["tr"], lowest["te"], lowest["ti"], lowest["ti2"]).validate()
    bounds = parameter_bounds(9000.0, 2372.0)
    assert bounds["te"][1] == RANGES["te"][1]  # below TR anyway
    assert bounds["ti"][1] == 9000.0 - GAP_MS and bounds["ti2"][1] == 2372.0 - GAP_MS
    assert parameter_bounds(600.0, 400.0)["te"][1] == 600.0 - GAP_MS


@pytest.mark.parametrize("values", [
    {"tr": 20000.0, "te": 999.0, "ti": 9999.0, "ti2": 4999.0, "flip": 180.0},
    {"tr": 3.0, "te": 0.0, "ti": 2.0, "ti2": 1.0, "flip": 1.0},
])
def test_what_the_sliders_allow_is_what_validate_accepts(values):
    """One rule: any clamped set of values makes a valid protocol of every sequence, and nudging a parameter
    past its bound is refused by validate."""
    clamped = clamp_parameters(values)
    for sequence in SEQUENCES:
        protocol_from_values(sequence, clamped)
    for name, bound in ORDER.items():
        pushed = dict(clamped, **{name: clamped[bound]})
        with pytest.raises(InputError):
            protocol_from_values("dir" if name != "te" else "se", pushed)
    for name, (low, high) in RANGES.items():
        inside = {"tr": 20000.0, "te": 10.0, "ti": 9000.0, "ti2": 1000.0} if name != "flip" else {"tr": 20.0, "te": 4.0, "flip": 30.0}
        Protocol("gre" if name == "flip" else "dir", **inside).validate()
        for outside in (low - 0.5, high * 1.01):
            with pytest.raises(InputError):
                Protocol("gre" if name == "flip" else "dir", **dict(inside, **{name: outside})).validate()


@pytest.mark.parametrize("sequence", list(LEARNABLE_RANGES))
def test_learnable_ranges_lie_inside_the_physical_ranges(sequence):
    """Every protocol the contrast module can reach is one that validate accepts."""
    ranges = LEARNABLE_RANGES[sequence]
    assert set(ranges) == {"tr", "te", *SEQUENCES[sequence].needs}
    highest = {"tr": ranges["tr"][1], "te": min(ranges["te"][1], LEARNABLE_TE_FRACTION_OF_TR * ranges["tr"][1])}
    for name in ("ti", "ti2"):  # the upper value is a fraction of TR or TI
        if name in ranges:
            assert 0 < ranges[name][1] < 1
            highest[name] = ranges[name][1] * highest[ORDER[name]]
    if "flip" in ranges:
        highest["flip"] = ranges["flip"][1]
    for name, (low, _high) in ranges.items():
        assert RANGES[name][0] <= low and highest[name] <= RANGES[name][1], (sequence, name)
    assert 0 < LEARNABLE_TE_FRACTION_OF_TR < 1


def test_validate_names_the_parameter_and_its_unit():
    with pytest.raises(InputError, match=r"TR must be in \[3, 20000\] ms, got 0.5"):
        Protocol("se", 0.5, 0.01).validate()
    with pytest.raises(InputError, match="flip angle must be in"):
        Protocol("gre", 20.0, 4.0, flip=0.0).validate()
    with pytest.raises(InputError, match="TE must be below TR"):
        Protocol("se", 500.0, 500.0).validate()
    with pytest.raises(InputError):
        Protocol("se", math.nan, 10.0).validate()


def test_protocol_from_values_keeps_what_the_sequence_takes():
    values = {"tr": 5000, "te": 20, "ti": 1800, "ti2": 500, "flip": 30}
    for sequence, spec in SEQUENCES.items():
        protocol = protocol_from_values(sequence, values)
        assert (protocol.sequence, protocol.tr, protocol.te) == (sequence, 5000.0, 20.0)
        for name in ("ti", "ti2", "flip"):
            assert getattr(protocol, name) == (float(values[name]) if name in spec.needs else None), (sequence, name)
    protocol = protocol_from_values("se", {"tr": 500, "te": 10, "ti": None})
    assert (protocol.ti, protocol.ti2, protocol.flip) == (None, None, None)
    with pytest.raises(InputError):
        protocol_from_values("ir", {"tr": 500, "te": 10, "ti": 800})  # TI > TR
    with pytest.raises(InputError):
        protocol_from_values("dir", {"tr": 5000, "te": 10, "ti": 1800})  # TI2 missing
    with pytest.raises(InputError):
        protocol_from_values("epi", {"tr": 5000, "te": 10})


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_values_are_the_presets_sliders(name):
    protocol = PRESETS[name].protocol
    values = preset_values(name.lower())
    assert set(values) == {"tr", "te", *SEQUENCES[protocol.sequence].needs} and set(values) <= set(PARAMETERS)
    assert values == {key: float(getattr(protocol, key)) for key in values}
    assert protocol_from_values(protocol.sequence, values) == protocol


def test_contrast_descriptions():
    for name, spec in PRESETS.items():
        text = f"{spec.shows}. {spec.source}."
        assert contrast_description(name) == text[0].upper() + text[1:]
    for key, spec in SEQUENCES.items():
        assert contrast_description(key) == spec.description[0].upper() + spec.description[1:] + "."
    assert contrast_description("gre").startswith("Spoiled gradient echo (T2 stands in for T2*)")


