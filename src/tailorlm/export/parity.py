"""Parity of an exported model with the model inside tailorlm, reloaded from disk.

Held-out prompts come from the run's own data (test, else validation, else the seeded validation
split of train), rendered as training rendered them; a few fixed prompts stand in when the data is
gone. For each prompt both models give the logits of the whole prompt and a greedy continuation (a
classifier: its predicted class). The check passes when the largest absolute logit difference is
within tolerance and the greedy tokens agree, where a disagreement counts only if the in-tool model
preferred its own token by more than twice the tolerance (a near-tie may flip under rounding).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FIXED_PROMPTS = ["The flight was delayed for three hours and", "Write one sentence about the sea.",
                 "What is the capital of France?", "Thank you for your help today,"]


class ParityError(RuntimeError):
    """The exported model does not reproduce the in-tool model."""


@dataclass
class Outputs:
    logits: list[torch.Tensor]      # per prompt: (positions, vocab) or (num_labels,)
    tokens: list[list[int]]         # per prompt: greedy continuation, or [predicted class]
    step_logits: list[list[torch.Tensor]]   # per prompt, per generated token: the logits it was chosen from


def held_out_prompts(cfg, tok, n: int = 4, labels: list[str] | None = None) -> tuple[list[list[int]], str]:
    """(token ids per prompt, where they came from). `labels`: the run's label words, which a prompt
    template's `{labels}` names (data.labels where set; else, as training, every label the rows hold)."""
    from ..data import DataError, Formatter, detect_format, label_set, read_rows, split_rows
    from ..data.tokenize import bos_prefix

    d = cfg.data
    try:
        if d.test:
            rows, source = read_rows(d.test, "skip").rows, "data.test"
        elif d.val:
            rows, source = read_rows(d.val, "skip").rows, "data.val"
        else:
            rows = split_rows(read_rows(d.train, "skip").rows, d.val_fraction, d.val_max, cfg.train.seed)[1]
            source = "the validation split of data.train"
        fmt = detect_format(rows, d)
        fm = Formatter(fmt, tok, d, labels or d.labels or (label_set(rows, d) if fmt == "classification" else None))
        texts = []
        for row in rows:
            if len(texts) == n:
                break
            try:
                segs = fm.segments(row) if cfg.model.task == "causal_lm" else [(fm.prompt_response(row)[0], False)]
            except (DataError, KeyError, ValueError):
                continue
            head = "".join(t for t, trained in segs[:next((i for i, s in enumerate(segs) if s[1]), len(segs))])
            texts.append(head or segs[0][0])    # text format: everything is trained; cut below
        if not texts:
            raise DataError("no usable rows")
    except (DataError, OSError) as e:
        texts, source = FIXED_PROMPTS[:n], f"fixed prompts (the run's data is not readable: {e})"
    if cfg.model.task == "sequence_classification":
        return [ids[: d.max_length] for ids in tok(texts, add_special_tokens=True)["input_ids"]], source
    bos = bos_prefix(tok)
    return [(bos + ids)[:128] for ids in tok(texts, add_special_tokens=False)["input_ids"]], source


@torch.no_grad()
def outputs(model, prompts: list[list[int]], task: str, pad_id: int, new_tokens: int = 16) -> Outputs:
    model.eval()
    device = next(model.parameters()).device
    out = Outputs([], [], [])
    for ids in prompts:
        x = torch.tensor([ids], device=device)
        mask = torch.ones_like(x)
        if task == "sequence_classification":
            logits = model(input_ids=x, attention_mask=mask).logits[0].float().cpu()
            out.logits.append(logits)
            out.tokens.append([int(logits.argmax())])
            out.step_logits.append([logits])
            continue
        out.logits.append(model(input_ids=x, attention_mask=mask, use_cache=False).logits[0].float().cpu())
        gen = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=pad_id, output_logits=True, return_dict_in_generate=True)
        out.tokens.append(gen.sequences[0, len(ids):].tolist())
        out.step_logits.append([s[0].float().cpu() for s in gen.logits])
    return out


def compare(ref: Outputs, got: Outputs, atol: float) -> dict:
    max_diff = max(float((a - b).abs().max()) if a.shape == b.shape else float("inf")
                   for a, b in zip(ref.logits, got.logits))
    agree, ties = 0, 0
    for want, have, steps in zip(ref.tokens, got.tokens, ref.step_logits):
        if want == have:
            agree += 1
            continue
        t = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
        if t < min(len(want), len(have)) and float(steps[t][want[t]] - steps[t][have[t]]) <= 2 * atol:
            ties += 1           # a near-tie at the first disagreement: rounding, not a different model
    ok = max_diff <= atol and agree + ties == len(ref.tokens)
    return {"ok": ok, "prompts": len(ref.tokens), "max_abs_logit_diff": max_diff, "atol": atol,
            "greedy_agree": agree, "greedy_near_ties": ties}


def describe(rep: dict, source: str) -> str:
    verdict = "OK" if rep["ok"] else "FAILED"
    ties = f" (+{rep['greedy_near_ties']} near-ties)" if rep["greedy_near_ties"] else ""
    return (f"parity on {rep['prompts']} held-out prompts from {source}: max |logit diff| "
            f"{rep['max_abs_logit_diff']:.2e} (tolerance {rep['atol']:.0e}); greedy output agrees on "
            f"{rep['greedy_agree']}/{rep['prompts']}{ties}: {verdict}")
