"""Generation metrics on held-out instruction rows: greedy answers scored against the reference."""
from __future__ import annotations

import torch

from ..data.tokenize import fitted_prompt
from ..forward import eval_mode, left_padded
from ..progress import track
from .text_metrics import generation_scores


@torch.no_grad()
def generation_eval(model, data, rows: list[dict], max_new_tokens: int, device: str) -> tuple[dict, list[dict]]:
    """(scores, samples): each sample is {prompt, reference, generated} for samples.jsonl."""
    fm, tok = data.formatter, data.formatter.tok
    samples = []
    with eval_mode(model), left_padded(tok):
        for i in track(range(0, len(rows), 8), "generation", total=len(rows), step=8):
            pairs = [fitted_prompt(fm, r, fm.dcfg.max_length) for r in rows[i:i + 8]]
            enc = tok([fm.prompt_text(p) for p, _ in pairs], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            samples += [{"prompt": p, "reference": g, "generated": t.strip()} for (p, g), t in zip(pairs, texts)]
    scores = generation_scores([s["generated"] for s in samples], [s["reference"] for s in samples])
    return scores, samples
