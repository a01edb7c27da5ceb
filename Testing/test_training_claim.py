"""The learned-vs-fixed experiment: its paired test, its plan, and a whole (tiny) run that resumes from its cache."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from SyntheticMRILib.errors import InputError
from SyntheticMRILib.io.volumes import Volume, read_volume, write_volume
from SyntheticMRILib.resources import sample_paths
from SyntheticMRILib.training.claim import candidates, claim_command, grid, plan_runs
from SyntheticMRILib.training.claim_report import compare
from SyntheticMRILib.training.claim_stats import sign_flip_p
from SyntheticMRILib.training.config import ClaimConfig, TrainConfig


def test_sign_flip_p_is_the_share_of_sign_patterns_at_least_as_extreme():
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # only all + and all - reach |sum| 6
    assert sign_flip_p([0.01] * 10) == pytest.approx(2 / 1024)
    assert sign_flip_p([1.0, -1.0]) == 1.0
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, 8)
    flips = rng.choice([-1.0, 1.0], size=(200000, 8))
    assert sign_flip_p(d) == pytest.approx(np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12), abs=0.01)
    with pytest.raises(InputError):
        sign_flip_p([])


def test_the_plan_trains_every_preset_set_then_seeds_the_best():
    claim = ClaimConfig(contrasts=(1, 2), snr=(30.0,), seeds=(0, 1, 2))
    assert [r.label for r in candidates(2, 30.0)] == ["T1w+T2w", "T1w+T2-FLAIR", "T2w+T2-FLAIR"]
    assert [r.protocols[0].ti for r in grid(claim, 30.0)] == list(claim.grid_ti)
    runs = plan_runs(claim, {(1, 30.0): "T2-FLAIR", (2, 30.0): "T1w+T2w"})
    assert len(runs) == 2 * 3 * 2 and {r.kind for r in runs} == {"fixed", "learned"}
    learned = [r for r in runs if r.kind == "learned" and r.k == 1]
    assert all(r.protocols[0].sequence == "ir" and r.learnable for r in learned)  # started at the best fixed set
    assert len({r.name for r in runs}) == len(runs)


def test_compare_pairs_seeds_and_subjects():
    def run(kind, seed, scores):
        return {"kind": kind, "k": 1, "snr": 30.0, "label": "T1w", "seed": seed, "test": scores, "protocols": ["se"]}

    results = [run("fixed", 0, [0.5, 0.6, 0.7]), run("fixed", 1, [0.5, 0.6, 0.7]),
               run("learned", 0, [0.6, 0.7, 0.8]), run("learned", 1, [0.5, 0.7, 0.8])]
    row = compare(results, 1, 30.0, "T1w")
    assert row["fixed"] == pytest.approx([0.6, 0.0])
    assert row["learned"][0] == pytest.approx((0.7 + 2 / 3) / 2)
    assert row["difference"][0] == pytest.approx(row["learned"][0] - 0.6)
    assert row["p"] == pytest.approx(sign_flip_p([0.05, 0.1, 0.1]))


@pytest.mark.slow
def test_a_tiny_claim_run_writes_its_table_and_resumes_from_its_cache(tmp_path):
    files = {}
    for name, path in sample_paths().items():  # a 20-slice slab through the structures: every model is run 3 times
        v = read_volume(path)
        origin = np.asarray(v.origin) + np.asarray(v.direction).reshape(3, 3)[:, 2] * 62 * v.spacing[2]
        slab = Volume(v.array[62:82].copy(), v.spacing, tuple(origin.tolist()), v.direction)
        files[name] = str(write_volume(slab, tmp_path / f"{name}.nrrd"))
    for split in ("train", "val", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
        (tmp_path / "data" / split / "manifest.json").write_text(json.dumps({"subjects": [{"id": "sample", "files": files}]}))
    tiny = TrainConfig(steps=2, batch=2, crop=64, channels=(8, 16, 32, 64), num_res_units=1, evaluations=1)
    claim = ClaimConfig(contrasts=(1,), snr=(30.0,), seeds=(0, 1), grid_ti=(600.0, 2000.0), train=tiny)
    said = []
    report = claim_command(tmp_path / "data", tmp_path / "out", claim, log=said.append)
    trained = [line for line in said if "val" in line and "test" in line]
    assert len(trained) == 3 + 2 + 3  # 3 candidates, 2 grid TIs, then fixed seed 1 and learned seeds 0 and 1
    (row,) = report["table"]
    assert row["seeds"] == [0, 1] and 0.0 <= row["fixed"][0] <= 1.0 and 0.0 <= row["p"] <= 1.0
    table = (tmp_path / "out" / "claim.md").read_text()
    assert f"| 1 | 30 | {row['fixed_set']} |" in table and (tmp_path / "out" / "claim.png").stat().st_size > 10000
    again = []
    claim_command(tmp_path / "data", tmp_path / "out", claim, log=again.append)
    assert not [line for line in again if "val" in line and "test" in line]  # everything came from the cache
    more = replace(claim, seeds=(0, 1, 2))
    said.clear()
    claim_command(tmp_path / "data", tmp_path / "out", more, log=said.append)
    assert len([line for line in said if "val" in line and "test" in line]) == 2  # only seed 2's two models
