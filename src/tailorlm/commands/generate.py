"""`tailorlm generate RUN --prompt TEXT`: greedy text from a run (or a model), chat template applied."""
from __future__ import annotations

from pathlib import Path

import torch

HELP = "generate text from a run (chat template applied)"


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory, or a model folder / embedded name")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)


def run(a) -> int:
    print(generate(a.run, a.prompt, a.max_new_tokens))
    return 0


@torch.no_grad()
def generate(target: str, prompt: str, max_new_tokens: int = 64) -> str:
    from ..build import load_run
    from ..models.load import load_model

    p = Path(target)
    if (p / "config.yaml").is_file():
        _, model, tok = load_run(p)
    else:
        model, tok = load_model(target)
    model.eval()
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    else:
        text = prompt
    enc = tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
