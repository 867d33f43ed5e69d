"""Generation metrics on held-out instruction rows: greedy answers scored against the reference."""
from __future__ import annotations

import torch

from ..forward import eval_mode, left_padded
from .text_metrics import generation_scores


@torch.no_grad()
def generation_eval(model, data, rows: list[dict], max_new_tokens: int, device: str) -> dict:
    fm, tok = data.formatter, data.formatter.tok
    preds, golds = [], []
    with eval_mode(model), left_padded(tok):
        for i in range(0, len(rows), 8):
            chunk = rows[i:i + 8]
            pairs = [fm.prompt_response(r) for r in chunk]
            enc = tok([fm.prompt_text(p) for p, _ in pairs], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            preds += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            golds += [g for _, g in pairs]
    return generation_scores([p.strip() for p in preds], golds)
