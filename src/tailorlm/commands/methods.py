"""`tailorlm methods [--model M]`: the methods, and what each trains on a given model.

With a model, each method is applied with its default settings to a skeleton of that model built on
the meta device (shapes only: no weights are read and no memory is used, so this is instant even for
a large model), and its trainable parameters are counted.
"""
from __future__ import annotations

import copy
import re

from ..methods import METHODS, count

HELP = "list the tuning methods (with --model: what each trains on it)"
EXAMPLES = """examples:
  tailorlm methods                                   one line per method
  tailorlm methods --model smollm2-135m-instruct     trainable parameters of each, on that model"""

# the pass-through needs a PEFT config; this one stands for "the rest of PEFT" in the table
CONFIG_EXAMPLES = {"peft": {"config": {"peft_type": "LOHA", "r": 8, "target_modules": "all-linear"}}}


def summary(m) -> str:
    """The first sentence of the method module's docstring."""
    text = " ".join((m.__doc__ or "").split())
    return re.split(r"(?<!\bal)\.\s", text, maxsplit=1)[0].rstrip(".") + "."


def skeleton(path: str, task: str, num_labels: int = 2):
    """The model's architecture with weights on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..models.arch import ARCHS
    from ..models.load import load_hf_config, resolve

    config = load_hf_config(path)   # the one safe loader: the folder's code is not run
    if task == "auto":
        task = "sequence_classification" if ARCHS.get(config.model_type) and ARCHS[config.model_type].encoder \
            else "causal_lm"
    if task == "sequence_classification":
        config.num_labels = num_labels
        if config.pad_token_id is None:
            config.pad_token_id = 0
    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    model.name_or_path = str(resolve(path))
    return model, task


def table(path: str, task: str = "auto") -> tuple[list[dict], str]:
    base, task = skeleton(path, task)
    total = count(base)[1]
    rows = []
    for name, m in METHODS.items():
        cfg = m.Config(**CONFIG_EXAMPLES.get(name, {}))
        try:
            n_train, _ = count(m.apply(copy.deepcopy(base), cfg))
            rows.append({"method": name, "trainable": n_train, "share": n_train / total, "note": summary(m)})
        except Exception as e:   # a method this model cannot take (e.g. prefix on a classifier): say why
            rows.append({"method": name, "trainable": None, "share": None, "note": f"not applicable: {e}"})
    return rows, f"{path} ({task}, {total:,} parameters)"


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="count trainable parameters on this model (folder or short name)")
    p.add_argument("--task", default="auto", choices=["auto", "causal_lm", "sequence_classification"],
                   help="auto: a classifier for encoders, a language model otherwise")


def methods_command(a) -> int:
    if a.model is None:
        for name, m in METHODS.items():
            lr = format(m.default_lr, ".0e").replace("e-0", "e-")   # 2e-4, not 0.0002
            print(f"{name:11s} lr {lr:<5s} {summary(m)}")
        return 0
    rows, title = table(a.model, a.task)
    print(f"methods on {title}, default settings:")
    for r in rows:
        n = f"{r['trainable']:>13,} {100 * r['share']:8.3f}%" if r["trainable"] is not None else f"{'-':>13} {'-':>9}"
        print(f"{r['method']:11s}{n}  {r['note']}")
    return 0
