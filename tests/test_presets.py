"""Every preset in configs/ validates as it stands and starts with the command that runs it."""
from pathlib import Path

import pytest

from tailorlm.config import load_config

PRESETS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_preset_is_valid_and_says_how_to_run_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"tailorlm train configs/{path.name}" in first
    load_config(path)
