"""tailorlm.json: what an exported model needs besides its weights to be the classifier (or
assistant) its run trained, written beside the weights in every export; README.md's snippet reads it.

    tailorlm         1, the version of this file's layout
    export           merge | adapter: what the folder holds
    method, task     the run's method (lora, ...) and model.task (causal_lm | sequence_classification)
    format           the run's data format: classification, instruction, chat or text
    prompt_template  data.prompt_template as training filled it: `{text}` the input, `{labels}` the
                     label words joined by ", "
    system           data.system, the system turn put before the prompt by a chat template (or null)
    chat_template    true: the tokenizer's chat template wraps the prompt (system turn, user turn, then the
                     generation prompt); false: plain_template does, `{prompt}` being the filled template
    plain_template   that wrapper
    add_bos          the tokenizer's BOS token goes first (training put it there)
    labels           the label words, in the order of a classifier head's outputs (null: no classes)
    scoring          label_likelihood: the label word with the highest summed log-probability after the
                     prompt wins; head: the argmax of the classification head; null: generation
    max_length       data.max_length, the most tokens (prompt and label) training saw
    base_model       {reference: the base as adapter_config.json names it (the Hub id of an embedded model,
                     else a folder), local: the folder it was loaded from on the machine that exported}
    run              the run folder the export came from (absolute)
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text

FILE = "tailorlm.json"
VERSION = 1


def record(cfg, run, model, tok, mode: str) -> dict:
    """The tailorlm.json of an export of `run` (a RunDir) in `mode`; `model` is the run's tuned model
    (before any merge: its base still names the folder it was loaded from)."""
    from ..data.formats import PLAIN_PROMPT, Formatter
    from ..data.tokenize import bos_prefix
    from ..methods.card import base_folder, base_of

    seen = (run.summary() or {}).get("data") or {}      # what the data made of format and labels
    fmt = seen.get("format") or cfg.data.format
    labels = cfg.data.labels or seen.get("labels")
    use_chat = Formatter("text", tok, cfg.data).use_chat   # (the "text" format renders without a template check)
    classify = fmt == "classification" or cfg.model.task == "sequence_classification"
    scoring = ("head" if cfg.model.task == "sequence_classification" else "label_likelihood") if classify else None
    return {"tailorlm": VERSION, "export": mode, "method": cfg.method.name, "task": cfg.model.task, "format": fmt,
            "prompt_template": cfg.data.prompt_template, "system": cfg.data.system, "chat_template": use_chat,
            "plain_template": PLAIN_PROMPT, "add_bos": bool(bos_prefix(tok)), "labels": labels if classify else None,
            "scoring": scoring, "max_length": cfg.data.max_length,
            "base_model": {"reference": base_of(model), "local": base_folder(model)},
            "run": str(run.path.resolve())}


def write(folder: Path, use: dict) -> None:
    write_text(Path(folder) / FILE, json.dumps(use, indent=2) + "\n")


def read(folder: Path) -> dict:
    return json.loads((Path(folder) / FILE).read_text())


def model_name(use: dict) -> str:
    """config.json's `_name_or_path` for an exported full model: the run, the method and the base it
    tuned (never the base's own name, which for a converted GGUF is the GGUF's internal one)."""
    return f"{Path(use['run']).name}: {use['method']} fine-tune of {use['base_model']['reference']} (tailorlm)"


def clean_config(folder: Path, use: dict) -> None:
    """config.json of a full model in `folder` (a merge, or full fine-tuning's adapter): `_name_or_path`
    names this model (model_name), and the GGUF's `_model_name_or_path` ("Smollm2 135M 8k Lc100K Mix1
    Ep2"), which transformers carries over from a converted GGUF, goes."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return
    cfg = json.loads(path.read_text())
    cfg.pop("_model_name_or_path", None)
    write_text(path, json.dumps({"_name_or_path": model_name(use), **cfg}, indent=2, sort_keys=True) + "\n")
