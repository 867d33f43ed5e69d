"""Generation metrics on held-out instruction rows: greedy answers scored against the reference."""
from __future__ import annotations

import torch

from ..data.tokenize import bos_prefix, fitted_prompt
from ..forward import eval_mode, left_padded
from ..progress import track
from .text_metrics import generation_scores


@torch.no_grad()
def generation_eval(model, data, rows: list[dict], max_new_tokens: int, device: str) -> tuple[dict, list[dict]]:
    """(scores, samples): each sample is {prompt, reference, generated} for samples.jsonl."""
    fm, tok = data.formatter, data.formatter.tok
    pairs = [fitted_prompt(fm, r, fm.dcfg.max_length) for r in rows]
    texts = greedy_texts(model, tok, [prompt_ids(tok, fm.prompt_text(p)) for p, _ in pairs], max_new_tokens, device)
    samples = [{"prompt": p, "reference": g, "generated": t.strip()} for (p, g), t in zip(pairs, texts)]
    scores = generation_scores([s["generated"] for s in samples], [s["reference"] for s in samples])
    return scores, samples


def prompt_ids(tok, text: str) -> list[int]:
    """A rendered prompt's token ids as training starts an example (data.tokenize): bos_prefix, then the
    text's own tokens; a template that writes BOS itself is not given a second."""
    bos, ids = bos_prefix(tok), tok(text, add_special_tokens=False)["input_ids"]
    return ids if bos and ids[:1] == bos else bos + ids


@torch.no_grad()
def greedy_texts(model, tok, prompts: list[list[int]], max_new_tokens: int, device: str,
                 batch_size: int = 8) -> list[str]:
    """The greedy continuation of each prompt (token ids), decoded; batches are padded on the left
    (attention-masked) so every row continues at its own end."""
    texts: list[str] = []
    with eval_mode(model), left_padded(tok):
        for i in track(range(0, len(prompts), batch_size), "generation", total=len(prompts), step=batch_size):
            enc = tok.pad({"input_ids": prompts[i:i + batch_size]}, return_tensors="pt").to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts
