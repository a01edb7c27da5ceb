"""The catalogue (SyntheticMRILib.physics.protocols): sequences, bounds, presets, GUI values; no torch needed.

The null points the presets use are checked against the signal equations in test_physics.py.
"""
from __future__ import annotations

import math
import re
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
    # the minima stay consistent (the double IR, which has every time, at its own minima: TI >= 10 ms is not
    # reachable at the TR minimum of a gradient echo, so the sequence is named)
    lowest = clamp_parameters({"tr": 0.0, "te": 0.0, "ti": 0.0, "ti2": 0.0, "flip": 0.0}, sequence="dir")
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
    """One rule: any set of values clamped for a sequence makes a valid protocol of that sequence, and nudging a
    parameter past its bound is refused by validate. (The minima depend on the sequence: a spin echo needs a
    longer TE than a gradient echo, an inversion a TI of at least 10 ms.)"""
    for sequence in SEQUENCES:
        protocol_from_values(sequence, clamp_parameters(values, sequence=sequence))
    clamped = clamp_parameters(values, sequence="dir")
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
    with pytest.raises(InputError, match=r"TR must be in \[3, 20000\] ms, got -5"):
        Protocol("se", -5.0, 10.0).validate()
    with pytest.raises(InputError, match=r"TR 0.5 ms and TE 0.01 ms are below"):  # more below, with the ms meant
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


# --------------------------------------------------------------------------- shortest times, and times in seconds
@pytest.mark.parametrize("protocol, meant", [
    (Protocol("se", 0.5, 0.01), "--tr 500 --te 10"),
    (Protocol("se", 500, 0.01), "--te 10"),
    (Protocol("se", 4.5, 0.1), "--tr 4500 --te 100"),  # TR looked possible, TE did not: both were seconds
    (Protocol("gre", 0.02, 0.004, flip=25), "--tr 20 --te 4"),
    (Protocol("ir", 9000, 90, 2.4), "--ti 2400"),
    (Protocol("ir", 9, 0.09, 2.4), "--tr 9000 --te 90 --ti 2400"),
    (Protocol("ir", 9, 90, 2400), "--tr 9000"),  # TE and TI above TR: TR was seconds
    (Protocol("dir", 7.5, 0.025, 3.0, 0.55), "--tr 7500 --te 25 --ti 3000 --ti2 550"),
])
def test_times_typed_in_seconds_are_refused_with_the_values_meant(protocol, meant):
    """Defect: --tr 0.5 --te 0.01 (seconds) was refused only for TR, and TE 0.01 ms passed: no sequence can
    echo that early. The message gives the milliseconds meant, when they make a valid protocol."""
    with pytest.raises(InputError) as error:
        protocol.validate()
    message = str(error.value)
    assert message.endswith(f"if you meant seconds, that is {meant}"), message
    ms = {name: value * 1000 if f"--{name} " in meant + " " else value for name, value in protocol.values().items()}
    Protocol(protocol.sequence, **ms).validate()  # the advice leads to a valid protocol


@pytest.mark.parametrize("protocol, below", [
    (Protocol("se", 500, 2), "TE 2 ms is below what sequence 'se' can do (TE >= 3 ms)"),
    (Protocol("gre", 20, 0.5, flip=25), "TE 0.5 ms is below what sequence 'gre' can do (TE >= 1 ms)"),
    (Protocol("ir", 5000, 10, 5), "TI 5 ms is below"),
    (Protocol("dir", 5000, 10, 500, 5), "TI2 5 ms is below"),
])
def test_times_below_what_the_sequence_can_do_are_refused_without_a_guess(protocol, below):
    """When the milliseconds meant would not make a clinical protocol either, the message guesses nothing."""
    with pytest.raises(InputError, match=re.escape(below)) as error:
        protocol.validate()
    assert "seconds" not in str(error.value)


def test_the_minima_are_one_table_that_bounds_presets_sliders_and_learned_contrasts_respect():
    from SyntheticMRILib.physics.protocols import MINIMA, minimum

    assert set(MINIMA) == set(SEQUENCES)
    for sequence, minima in MINIMA.items():
        assert set(minima) <= {"tr", "te", *SEQUENCES[sequence].needs}, sequence
        bounds = parameter_bounds(20000.0, 9000.0, sequence=sequence)
        for name, value in minima.items():
            assert minimum(name, sequence) == max(value, RANGES[name][0])
            assert bounds[name][0] >= minimum(name, sequence), (sequence, name)  # the sliders never go below
            if name in LEARNABLE_RANGES.get(sequence, {}):  # nor does a learned contrast
                assert LEARNABLE_RANGES[sequence][name][0] >= minimum(name, sequence), (sequence, name)
    for name, spec in PRESETS.items():
        for key, value in spec.protocol.values().items():
            assert value >= minimum(key, spec.protocol.sequence), (name, key)
    assert minimum("te", "se") > minimum("te", "gre") >= 1.0  # a refocusing pulse takes time
    assert minimum("te") == minimum("te", "gre")  # with no sequence: the most permissive one
    for sequence in SEQUENCES:  # one step below the minimum is refused, the minimum itself is not
        lowest = clamp_parameters({"tr": 0.0, "te": 0.0, "ti": 0.0, "ti2": 0.0, "flip": 0.0}, sequence=sequence)
        protocol = protocol_from_values(sequence, lowest)
        for name in ("te", "ti", "ti2"):
            if getattr(protocol, name) is not None:
                with pytest.raises(InputError, match="is below"):
                    Protocol(**{**protocol.__dict__, name: minimum(name, sequence) - 0.5}).validate()
