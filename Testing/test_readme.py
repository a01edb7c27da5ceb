"""The README stays true: its two commands are where CI finds them, and its preset table matches the code."""
from __future__ import annotations

import re
from pathlib import Path

from SyntheticMRILib.physics.protocols import PRESETS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_finds_both_commands():
    script = (ROOT / ".ci" / "run").read_text()
    for marker in ("main-command", "test-command"):
        assert f"<!-- {marker} -->" in README and marker in script
    head = README[: README.index("## What it does")]
    assert "syntheticmri demo" in head and "pytest" in head


def test_preset_table_matches_the_code():
    rows = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^\| (\S+) \| `(\w+)` \| ([^|]+?) \|", README, re.M)}
    assert set(rows) == set(PRESETS)
    for name, preset in PRESETS.items():
        assert rows[name] == (preset.protocol.sequence, preset.protocol.caption()), name
