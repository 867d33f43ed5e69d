"""`tailorlm presets [NAME]`: the configs shipped inside the package, and `train --preset NAME`'s lookup.

The presets are package data (src/tailorlm/presets/*.yaml; the checkout's configs/ links there), so
an installed tailorlm finds them wherever it runs, not only from a clone. Their data paths are
relative to the working directory: `tailorlm demo --data-only` writes the data they read there.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

HELP = "list the shipped preset configs (with NAME: print one, to copy and edit)"
EXAMPLES = """examples:
  tailorlm presets                          names and what each does
  tailorlm presets airline-lora > my.yaml   a preset to edit
  tailorlm demo --data-only && tailorlm train --preset airline-lora"""

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
TAGS = ("Tuned on:", "Data:")   # the header's notes beside its description (line 1 is the command)


def names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    p = PRESET_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not p.is_file():
        raise ConfigError(f"--preset {name!r}: no such preset (shipped: {', '.join(names())}). "
                          "Fix: tailorlm presets lists them")
    return p


def config_argument(config: str | None, preset: str | None) -> str | None:
    """The config file `train` reads: the CONFIG argument, or --preset NAME's file; not both."""
    if preset is None:
        return config
    if config is not None:
        raise ConfigError(f"train got both a config ({config}) and --preset {preset}. Fix: give one of them")
    return str(preset_path(preset))


def _sentences(path: Path) -> list[str]:
    """The sentences of the preset's comment header after line 1 (which is the command)."""
    lines = path.read_text().splitlines()[1:]
    text = " ".join(ln.lstrip("# ").strip() for ln in lines[: next((i for i, ln in enumerate(lines)
                                                                 if not ln.startswith("#")), len(lines))])
    return [t.strip().rstrip(".") for t in text.split(". ") if t.strip()]


def describe(path: Path) -> str:
    """What the preset does: the header's first sentence that is not its `Tuned on:` or `Data:` note."""
    return next((t for t in _sentences(path) if not t.startswith(TAGS)), "")


def data_note(path: Path) -> str | None:
    """Where the preset's data comes from and how to make it: its header's `Data:` sentence."""
    return next((t.removeprefix("Data:").strip() for t in _sentences(path) if t.startswith("Data:")), None)


def command(path: Path) -> str:
    """Line 1 of a preset: the command that makes its data and runs it."""
    return path.read_text().splitlines()[0].lstrip("# ").strip()


def add_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="print this preset's YAML")


def presets_command(a) -> int:
    if a.name:
        print(preset_path(a.name).read_text(), end="")
        return 0
    for n in names():
        print(f"{n:20s} {describe(PRESET_DIR / f'{n}.yaml')}")
    print(f"\n{len(names())} presets in {PRESET_DIR}. Their data paths are relative to the working directory. "
          "Run one: tailorlm demo --data-only && tailorlm train --preset NAME")
    return 0
