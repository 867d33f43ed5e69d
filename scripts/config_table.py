"""README's config table, generated from the config models (src/tailorlm/config.py), so it cannot drift.

    python scripts/config_table.py            # print the markdown table
    python scripts/config_table.py --write    # replace it in README.md, between the config-table markers

Every key, its default and its one-line description come from the pydantic models: the sections'
descriptions are their `Field(description=...)`, and so are the method options', declared with the
method in its own file (src/tailorlm/methods/), so a new method documents itself. tests/test_config_table.py
fails when README's table differs from this output, or when a field has no description.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from tailorlm.config import Config  # noqa: E402
from tailorlm.methods import METHOD_CONFIGS  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-table -->", "<!-- /config-table -->"
SECTIONS = ["model", "data", "train", "eval", "retention", "privacy", "bias", "output"]


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{value}`" if isinstance(value, str) else f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fields(prefix: str, model) -> list[tuple[str, str, str]]:
    """A section's rows; a nested section (privacy.canaries) by its own keys."""
    out = []
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out.append((f"`{prefix}.{name}`", "`{...}`", f"{f.description or ''}: the keys below"))
            out += _fields(f"{prefix}.{name}", f.annotation)
        else:
            out.append((f"`{prefix}.{name}`", _default(f), f.description or ""))
    return out


def rows() -> list[tuple[str, str, str]]:
    """(key, default, description) of every config key, sections first, then the method options."""
    out = []
    for section in SECTIONS:
        out += _fields(section, Config.model_fields[section].annotation)
    names = ", ".join(f"`{n}`" for n in METHOD_CONFIGS)
    out.append(("`method.name`", "`lora`",
                f"the method: {names} (`tailorlm methods` lists them); `method: X` is short for it"))
    for method, cfg in METHOD_CONFIGS.items():
        for name, f in cfg.model_fields.items():
            if name != "name":
                out.append((f"`method.{name}`", _default(f), f"{method}: {f.description or ''}"))
    return out


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| {k} | {_cell(d)} | {_cell(m)} |" for k, d, m in rows()]
    return "\n".join(lines) + "\n"


def readme_table(text: str) -> str:
    """What README holds between the markers."""
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(path: Path = README) -> None:
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    path.write_text(f"{head}{START}\n{table()}{END}{rest.split(END, 1)[1]}", encoding="utf-8")


if __name__ == "__main__":
    write() if "--write" in sys.argv[1:] else print(table(), end="")
