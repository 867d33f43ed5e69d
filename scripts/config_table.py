"""README's config table, generated from the config models (src/tailorlm/config.py), so it cannot drift.

    python scripts/config_table.py            # print the markdown table
    python scripts/config_table.py --write    # replace it in README.md, between the config-table markers

Every key, its default and its one-line description come from the pydantic models: the sections'
descriptions are their `Field(description=...)`; the method options (declared in each method's file)
take theirs from METHOD_DOCS below unless the field has its own. tests/test_config_table.py fails
when README's table differs from this output, or when a field has no description.
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

METHOD_DOCS = {
    "lora.r": "rank of the low-rank update A·B",
    "lora.alpha": "scale: the update is multiplied by alpha / r (alpha / sqrt(r) with rslora)",
    "lora.dropout": "dropout on the adapter's input",
    "lora.targets": "`all-linear`, or the names of the linear modules to adapt",
    "lora.layers": "null: every layer; N: the top N; or a list of layer indices",
    "lora.dora": "weight-decomposed LoRA (DoRA)",
    "lora.rslora": "rank-stabilised scaling alpha / sqrt(r)",
    "ia3.targets": "`default` (PEFT's choice per architecture: keys, values, MLP) or module names",
    "ia3.feedforward": "targets whose input (not output) is scaled; default: the MLP's",
    "peft.config": "any PEFT tuner's config dict (`peft_type: LOHA`, ...), checked against PEFT's own class",
    "bottleneck.placement": "`houlsby`: after attention and MLP; `pfeiffer`: after the MLP only",
    "bottleneck.reduction_factor": "bottleneck width = hidden size / reduction_factor ...",
    "bottleneck.bottleneck_dim": "... unless given directly",
    "bottleneck.activation": "the non-linearity between the two projections",
    "bottleneck.layers": "null: every block; N: the top N; or a list of block indices",
    "prompt.virtual_tokens": "trainable input embeddings in front of every row",
    "prompt.init": "start as the embeddings of `init_text`, of sampled `vocab` tokens, or `random`",
    "prompt.init_text": "required by init: text",
    "prefix.virtual_tokens": "virtual key/value positions in every layer",
    "prefix.init": "`random`, or `text`: the keys and values the frozen model computes for `init_text`",
    "prefix.init_text": "required by init: text",
    "prefix.projection": "train the prefix through an MLP (the paper's reparameterisation)",
    "prefix.projection_dim": "the MLP's hidden width",
}


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
                doc = f.description or METHOD_DOCS.get(f"{method}.{name}", "")
                out.append((f"`method.{name}`", _default(f), f"{method}: {doc}"))
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
