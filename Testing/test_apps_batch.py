"""Batch synthesis over a study folder: every subject on its own grid; a bad subject is skipped, not fatal."""
from __future__ import annotations

import numpy as np

from SyntheticMRILib.apps.cli import main
from SyntheticMRILib.io.maps import load_maps
from SyntheticMRILib.physics.protocols import preset
from SyntheticMRILib.physics.synthesis import synthesize
from SyntheticMRILib.io.volumes import read_volume, write_volume

from conftest import make_maps


def _study(root, seeds, suffix=".nii.gz"):
    for n, seed in enumerate(seeds):
        for name, volume in make_maps(shape=(6 + n, 7, 8), seed=seed).items():
            write_volume(volume, root / f"sub-{n:02d}" / f"{name}{suffix}")
    return root


def test_batch_writes_every_contrast_on_each_subjects_grid(tmp_path):
    study = _study(tmp_path / "study", seeds=[1, 2])
    out = tmp_path / "out"
    assert main(["batch", "--input", str(study), "--preset", "T1w", "--preset", "DIR", "-o", str(out)]) == 0
    for subject in ("sub-00", "sub-01"):
        maps = load_maps(*(study / subject / f"{m}.nii.gz" for m in ("t1", "t2", "pd")))
        for name in ("T1w", "DIR"):
            image = read_volume(out / subject / f"{name}.nrrd")
            assert image.same_grid(maps.grid, tolerance=1e-6)
            expected = synthesize(*maps.tensors(), preset(name).protocol).numpy()
            np.testing.assert_allclose(image.array, expected, rtol=1e-6, atol=1e-7)


def test_bad_subject_is_skipped_and_reported(tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=[1, 2])
    (study / "sub-01" / "pd.nii.gz").unlink()
    out = tmp_path / "out"
    assert main(["batch", "--input", str(study), "--preset", "T2w", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sub-01" in err and (out / "sub-00" / "T2w.nrrd").exists() and not (out / "sub-01").exists()
    # a second run without --overwrite refuses the subject already done and writes nothing new
    before = (out / "sub-00" / "T2w.nrrd").read_bytes()
    assert main(["batch", "--input", str(study), "--preset", "T2w", "-o", str(out)]) == 2
    assert (out / "sub-00" / "T2w.nrrd").read_bytes() == before


def test_progress_lines_for_a_gui(tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=[1, 2, 3])
    assert main(["batch", "--input", str(study), "--preset", "T1w", "-o", str(tmp_path / "out"), "--progress", "lines"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress ")]
    assert lines == ["progress 0/3 sub-00", "progress 1/3 sub-01", "progress 2/3 sub-02", "progress 3/3 "]
