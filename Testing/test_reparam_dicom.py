"""A weighted scan's protocol from the text of its DICOM tags (SyntheticMRILib.io.dicom_tags), as Slicer's DICOM
database returns it: no database, no Slicer, no torch needed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.dicom_tags import DICOM_TAGS, first_number, protocol_from_tags


def test_the_tags_are_those_of_the_standard():
    assert DICOM_TAGS == {"tr": "0018,0080", "te": "0018,0081", "ti": "0018,0082", "sequence": "0018,0020"}


@pytest.mark.parametrize("tags, expected", [
    ({"tr": "500", "te": "10", "ti": "", "sequence": "SE"}, {"sequence": "se", "tr": 500.0, "te": 10.0}),
    # a multi-echo spin echo: the first echo; no ScanningSequence at all: a spin echo when TR is there
    ({"tr": "4500.0", "te": "100\\200", "ti": "", "sequence": ""}, {"sequence": "se", "tr": 4500.0, "te": 100.0}),
    ({"tr": "9000", "te": "90", "ti": "2500", "sequence": "SE\\IR"}, {"sequence": "ir", "tr": 9000.0, "te": 90.0, "ti": 2500.0}),
    # an InversionTime makes it IR whatever ScanningSequence says; "IR" alone does too (TI then to be typed in)
    ({"tr": "5000", "te": "60", "ti": "160", "sequence": "SE"}, {"sequence": "ir", "tr": 5000.0, "te": 60.0, "ti": 160.0}),
    ({"tr": "9000", "te": "90", "ti": "", "sequence": "IR"}, {"sequence": "ir", "tr": 9000.0, "te": 90.0}),
    # a spin echo's TI of 0 (some scanners write one) or an unreadable value is not known; an EPI spin echo is SE
    ({"tr": "3000", "te": "80", "ti": "0", "sequence": "EP\\SE"}, {"sequence": "se", "tr": 3000.0, "te": 80.0}),
    ({"tr": "n/a", "te": " 12 ", "ti": "", "sequence": " se "}, {"sequence": "se", "te": 12.0}),
    ({"tr": "", "te": "", "ti": "", "sequence": ""}, {}),  # not an MR image (or no header)
    ({}, {}),
])
def test_the_protocol_comes_from_the_tag_strings(tags, expected):
    assert protocol_from_tags(tags) == expected


@pytest.mark.parametrize("sequence, ti", [("GR", ""), ("GR\\EP", ""), ("gr", ""), ("GR\\IR", "900"), ("IR\\GR", "")])
def test_a_gradient_echo_scan_is_refused_in_one_line(sequence, ti):
    """An MPRAGE (GR\\IR, with its TI) too: its inversion-prepared gradient-echo train is not a magnitude IR."""
    with pytest.raises(InputError) as error:
        protocol_from_tags({"tr": "2300", "te": "3", "ti": ti, "sequence": sequence})
    message = str(error.value)
    assert "gradient-echo" in message and "\n" not in message
    assert ("MPRAGE" in message) == ("IR" in sequence.upper())


def test_numbers_are_the_first_value_and_only_positive_ones():
    assert first_number("120\\125") == 120.0 and first_number("8000") == 8000.0
    assert [first_number(text) for text in ("", None, "n/a", "0", "-5", "nan")] == [None] * 6


def test_a_bids_sidecar_follows_the_same_rule(tmp_path):
    """io.scan reads a sidecar's ScanningSequence (a list or backslash-joined text) and InversionTime the same way,
    and a refusal names the sidecar."""
    from SyntheticMRILib.io.scan import _sequence_from

    sidecar = tmp_path / "scan.json"
    for scanning, expected in (("SE", "se"), (["SE", "IR"], "ir"), ("EP\\SE", "se"), ("", "se")):
        assert _sequence_from({"RepetitionTime": 2.0, "ScanningSequence": scanning}, sidecar) == expected
    assert _sequence_from({"RepetitionTime": 9.0, "InversionTime": 2.5}, sidecar) == "ir"
    assert _sequence_from({"EchoTime": 0.1}, sidecar) is None
    for scanning in ("GR\\IR", ["GR", "IR"], "GR"):
        with pytest.raises(InputError, match="gradient-echo") as error:
            _sequence_from({"RepetitionTime": 2.3, "InversionTime": 0.9, "ScanningSequence": scanning}, sidecar)
        assert str(error.value).startswith(str(sidecar))


def test_the_parser_imports_neither_torch_nor_slicer():
    """The module reads the tags when a volume is picked, before PyTorch may be installed."""
    code = ("import sys, SyntheticMRILib.io.dicom_tags, SyntheticMRILib.jobs; "
            "print(sorted(m for m in ('torch', 'slicer', 'qt', 'vtk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
