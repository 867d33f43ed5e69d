"""Every preset shipped in the package (src/tailorlm/presets/, which the checkout's configs/ links to)
validates as it stands and starts with the command that runs it."""
from pathlib import Path

import pytest

from tailorlm.commands.presets import PRESET_DIR, names, preset_path
from tailorlm.config import load_config

PRESETS = sorted(PRESET_DIR.glob("*.yaml"))


def test_the_checkout_configs_folder_is_the_package_presets():
    assert (Path(__file__).parents[2] / "configs").resolve() == PRESET_DIR
    assert len(PRESETS) >= 6 and names() == [p.stem for p in PRESETS]


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_preset_is_valid_and_says_how_to_run_it(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"tailorlm train --preset {path.stem}" in first
    assert preset_path(path.stem) == path
    load_config(path)
