"""Provenance in every synthesized file: the keys, their two forms (NRRD fields, NIfTI descrip), the writers
(synth, batch, contrast --learned) and ``syntheticmri info``."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from SyntheticMRILib import __version__
from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.io.provenance import (
    NIFTI_DESCRIPTION, PARAMETER_KEYS, PRESET_KEY, PROTOCOL_KEY, PROVENANCE_KEYS, SCALE_KEY, SEQUENCE_KEY, TABLE_KEY,
    VERSION_KEY, Provenance, describe, read_provenance, write_contrast,
)
from SyntheticMRILib.io.volumes import COMPACT_BITS, Volume, read_header, read_volume, write_volume
from SyntheticMRILib.physics.protocols import PRESETS, Protocol, protocol_from_args
from SyntheticMRILib.resources import sample_paths

from conftest import oblique_left_handed_direction

GRID = dict(spacing=(0.9, 1.1, 2.5), origin=(12.5, -30.25, 7.0), direction=oblique_left_handed_direction())
# What a learned contrast looks like: parameters with all the digits a float32 optimizer leaves.
LEARNED = Protocol("dir", 10787.2421875, 107.17829895019531, 2465.40185546875, 612.0048828125)


@pytest.fixture(scope="module")
def sample_maps(tmp_path_factory):
    """A 16 x 20 x 24 block of the sample's T1/T2/PD maps through the deep grey matter, on an oblique,
    left-handed grid: real tissue values, small enough for the command line to run in a moment."""
    folder = tmp_path_factory.mktemp("maps")
    paths = {}
    for name in ("t1", "t2", "pd"):
        array = read_volume(sample_paths()[name]).array
        k, j, i = (n // 2 for n in array.shape)
        block = np.ascontiguousarray(array[k - 8:k + 8, j - 10:j + 10, i - 12:i + 12], np.float32)
        block[0] = 0  # a background slab
        paths[name] = write_volume(Volume(block, **GRID), folder / f"{name}.nrrd")
    return paths


def _maps_args(paths):
    return ["--t1", str(paths["t1"]), "--t2", str(paths["t2"]), "--pd", str(paths["pd"])]


def test_one_naming_scheme_and_exact_numbers():
    fields = Provenance.of_preset(PRESETS["DIR"]).fields()
    assert all(key.startswith("SyntheticMRI.") for key in fields) and set(fields) <= set(PROVENANCE_KEYS)
    assert fields[SEQUENCE_KEY] == "dir" and fields[PRESET_KEY] == "DIR" and fields[VERSION_KEY] == __version__
    assert fields[TABLE_KEY] == "3" and fields[PARAMETER_KEYS["tr"]] == "7500"  # the presets use the 3 T table
    assert fields[PROTOCOL_KEY] == f"dir {PRESETS['DIR'].protocol.caption()}"
    learned = Provenance(LEARNED).fields()
    assert PRESET_KEY not in learned and TABLE_KEY not in learned and PARAMETER_KEYS["flip"] not in learned
    assert float(learned[PARAMETER_KEYS["te"]]) == LEARNED.te  # every digit survives
    assert Provenance.from_fields(learned) == Provenance(LEARNED)
    assert Provenance.from_fields({"ITK_InputFilterName": "NrrdImageIO"}) is None


def test_the_table_is_recorded_only_where_a_null_point_was_computed():
    flair = protocol_from_args("flair", 11000, 120)
    assert Provenance.of_arguments(flair, "flair", None).table_field == 3.0
    assert Provenance.of_arguments(flair, "flair", None, field=1.5).table_field == 1.5
    assert Provenance.of_arguments(protocol_from_args("flair", 11000, 120, ti=2600), "flair", 2600).table_field is None
    assert Provenance.of_arguments(protocol_from_args("se", 500, 10), "se", None).table_field is None


@pytest.mark.parametrize("provenance", [Provenance.of_preset(p) for p in PRESETS.values()]
                         + [Provenance(LEARNED), Provenance(LEARNED, "a-long-preset-name", 1.5, "1.20.3.dev40")],
                         ids=[*PRESETS, "learned", "long"])
def test_the_nifti_form_fits_80_characters_and_reads_back(provenance):
    text = provenance.description()
    assert len(text) <= 79 and text.startswith(f"SyntheticMRI {provenance.version} {provenance.protocol.sequence} ")
    back = Provenance.from_description(text)
    assert back.table_field == provenance.table_field and back.version == provenance.version
    assert back.protocol.sequence == provenance.protocol.sequence
    assert back.preset in (provenance.preset, None)  # an outlandish name may not fit; nothing else is dropped
    digits = 6 if provenance.version == __version__ else 3  # the usual case; fewer only where 80 characters demand
    for name, value in provenance.protocol.values().items():
        assert getattr(back.protocol, name) == pytest.approx(float(value), rel=0.51 * 10 ** (1 - digits)), name
    if provenance.version == __version__:
        assert back.preset == provenance.preset


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".nii.gz", ".nii"])
@pytest.mark.parametrize("bits", [None, COMPACT_BITS])
def test_provenance_round_trip(tmp_path, suffix, bits):
    """Written, read back: the same values (NRRD/MHA exactly; NIfTI to the 6 digits of its descrip)."""
    volume = Volume(np.random.default_rng(1).uniform(-1, 1, (5, 6, 7)).astype(np.float32), **GRID)
    for provenance in (Provenance.of_preset(PRESETS["T2-FLAIR"]), Provenance(LEARNED)):
        path = write_contrast(volume, tmp_path / f"{provenance.protocol.sequence}{suffix}", provenance, bits=bits)
        back = read_provenance(path)
        if suffix.startswith(".nii"):
            assert back == Provenance.from_description(provenance.description())
            assert read_header(path).metadata[NIFTI_DESCRIPTION] == provenance.description()
        else:
            assert back == provenance
            assert read_header(path).metadata[PROTOCOL_KEY] == provenance.fields()[PROTOCOL_KEY]
        assert read_volume(path).same_grid(volume, tolerance=1e-5)  # the header fields leave the grid alone
    if suffix == ".nrrd":  # plain NRRD key/value lines, readable with `head`
        header = path.read_bytes().split(b"\n\n")[0].decode()
        assert f"{PARAMETER_KEYS['ti2']}:=612.0048828125" in header.splitlines()


def test_nifti_header_fields_are_where_other_readers_look(tmp_path):
    """descrip at byte 148 (80 bytes) and scl_slope at 112 (float32) of the NIfTI-1 header: what FSL, nibabel and
    Slicer read. The scale is applied by any NIfTI reader, SimpleITK included."""
    volume = Volume(np.linspace(0, 3, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7), **GRID)
    provenance = Provenance.of_preset(PRESETS["dSIR"])
    path = write_contrast(volume, tmp_path / "d.nii", provenance, bits=COMPACT_BITS)
    header = path.read_bytes()[:348]
    assert header[148:228].rstrip(b"\0").decode() == provenance.description()
    slope = struct.unpack("<f", header[112:116])[0]
    assert slope == pytest.approx(3 / 4095, rel=1e-6) and struct.unpack("<h", header[70:72])[0] == 4  # int16
    assert np.abs(read_volume(path).array - volume.array).max() <= slope / 2 * (1 + 1e-3)  # float32 read-back


def test_info_on_a_synthesized_file(sample_maps, tmp_path, capsys):
    out = tmp_path / "flair.nrrd"
    assert main(["synth", *_maps_args(sample_maps), "--preset", "t2-flair", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "24 x 20 x 16 voxels (x, y, z)" in text and "0.9 1.1 2.5 mm" in text and "12.5 -30.25 7 mm (LPS)" in text
    direction = np.reshape(GRID["direction"], (3, 3))
    assert " | ".join(" ".join(f"{round(v, 6) + 0.0:g}" for v in row) for row in direction) in text
    assert "32-bit float" in text
    for key, value in Provenance.of_preset(PRESETS["T2-FLAIR"]).fields().items():
        assert any(line.split() == [key, *value.split()] for line in text.splitlines()), key
    assert describe(out) == text.rstrip("\n")


def test_info_on_a_plain_file_prints_the_grid_and_says_there_is_no_provenance(capsys):
    assert main(["info", str(sample_paths()["labels"])]) == 0
    text = capsys.readouterr().out
    assert "186 x 219 x 172 voxels (x, y, z)" in text and "1 1 1 mm" in text and "1 0 0 | 0 1 0 | 0 0 1" in text
    assert "16-bit unsigned integer" in text and "provenance none" in text and "SyntheticMRI." not in text


def test_info_on_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.nrrd")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("syntheticmri: error:") and "no such file" in err and err.count("\n") == 1


def test_synth_records_the_table_only_for_a_computed_ti_and_stores_int16_on_request(sample_maps, tmp_path):
    nulled, given = tmp_path / "nulled.nii.gz", tmp_path / "given.nrrd"
    assert main(["synth", *_maps_args(sample_maps), "--sequence", "flair", "--tr", "11000", "--te", "120",
                 "-o", str(nulled)]) == 0
    assert main(["synth", *_maps_args(sample_maps), "--sequence", "flair", "--tr", "11000", "--te", "120",
                 "--ti", "2600", "--storage", "int16", "-o", str(given)]) == 0
    computed = read_provenance(nulled)
    assert computed.table_field == 3.0 and computed.preset is None and computed.protocol.sequence == "ir"
    assert computed.protocol.ti == pytest.approx(protocol_from_args("flair", 11000, 120).ti, rel=5e-6)
    assert read_header(nulled).pixel_type == "32-bit float"  # float32 unless asked
    explicit = read_provenance(given)
    assert explicit.table_field is None and explicit.protocol == Protocol("ir", 11000.0, 120.0, 2600.0)
    assert read_header(given).pixel_type == "16-bit signed integer" and SCALE_KEY in read_header(given).metadata
    reference = tmp_path / "reference.nrrd"
    main(["synth", *_maps_args(sample_maps), "--sequence", "ir", "--tr", "11000", "--te", "120", "--ti", "2600",
          "-o", str(reference)])
    exact, stored = read_volume(reference).array, read_volume(given).array
    scale = float(read_header(given).metadata[SCALE_KEY])
    assert scale == pytest.approx(np.abs(exact).max() / 4095, rel=1e-6)
    assert np.abs(stored - exact).max() <= scale / 2 * (1 + 1e-3)  # float32 read-back


def test_batch_and_learned_contrasts_carry_their_provenance(sample_maps, tmp_path):
    study = tmp_path / "study" / "sub-01"
    study.mkdir(parents=True)
    for name, path in sample_maps.items():
        (study / path.name).write_bytes(path.read_bytes())
    assert main(["batch", "--input", str(study.parent), "--preset", "STIR", "-o", str(tmp_path / "out")]) == 0
    assert read_provenance(tmp_path / "out" / "sub-01" / "STIR.nrrd") == Provenance.of_preset(PRESETS["STIR"])

    from SyntheticMRILib.jobs import read_learned_index

    learned = tmp_path / "learned"
    assert main(["contrast", *_maps_args(sample_maps), "--learned", "--device", "cpu", "-o", str(learned)]) == 0
    for path, protocol in read_learned_index(learned):
        provenance = read_provenance(path)
        assert provenance.preset is None and provenance.table_field is None and provenance.version == __version__
        assert provenance.protocol.sequence == protocol.sequence
        for name, value in protocol.values().items():
            assert getattr(provenance.protocol, name) == pytest.approx(float(value), rel=1e-12), name
