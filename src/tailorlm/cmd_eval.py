"""`tailorlm eval` and `tailorlm generate`: the same evaluation training uses, from the command line."""
from __future__ import annotations

from pathlib import Path

import torch

from .config import load_config
from .data import build_data
from .train.device import pick_device, resolve_precision
from .train.loop import evaluate
from .train.setup import build, load_run


def evaluate_target(target: str, overrides: list[str]) -> dict:
    """A run directory: its final model; a config file: the base model it names."""
    p = Path(target)
    if p.is_dir():
        cfg, model, tok = load_run(p)
        cfg = load_config(p / "config.yaml", overrides)
        data = build_data(cfg.data, tok, cfg.train.seed, task=cfg.model.task)
    else:  # data first: a classifier's head is sized by the data's labels
        cfg = load_config(p, overrides)
        model, tok, data = build(cfg)
    device = pick_device(cfg.train.device)
    cfg.train.precision = resolve_precision(cfg.train.precision, device)
    return evaluate(model.to(device), data, cfg, device)


@torch.no_grad()
def generate(target: str, prompt: str, max_new_tokens: int = 64) -> str:
    p = Path(target)
    if (p / "config.yaml").is_file():
        _, model, tok = load_run(p)
    else:
        from .models.load import load_model
        model, tok = load_model(target)
    model.eval()
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    else:
        text = prompt
    enc = tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
