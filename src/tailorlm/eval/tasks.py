"""Task metrics: classification accuracy and macro-F1, by label likelihood (a language model) or by
the classification head (`model.task: sequence_classification`).

For each held-out row the prompt is rendered exactly as in training, and each candidate label word
is scored by its summed log-probability after the prompt; the most likely label wins. When every
label is a single token (the common case), one forward of the prompt scores all candidates at once;
longer label words continue from that forward's key/value cache, so the prompt is still computed once.
A method that puts virtual tokens in front of each row is handled by the loss module's batching and
logits (one example per row, columns shifted past the virtual positions).
"""
from __future__ import annotations

import copy
import inspect

import torch

from ..data.batching import collate
from ..data.tokenize import IGNORE, Example, bos_prefix, fitted_prompt, tokenize_classes
from ..device import autocast
from ..forward import batcher, class_logits, eval_mode, lm_logits
from ..methods.base import SequenceLayout, sequence_layout
from ..progress import track


def macro_f1(gold: list[str], pred: list[str], labels: list[str]) -> float:
    f1s = []
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred))
        fp = sum(g != lab and p == lab for g, p in zip(gold, pred))
        fn = sum(g == lab and p != lab for g, p in zip(gold, pred))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def per_class(gold: list[str], pred: list[str], labels: list[str]) -> dict:
    """`per_class`: {label: {precision, recall, f1, support}} (precision tp / (tp + fp), recall tp / (tp + fn),
    F1 their harmonic mean, 0 where undefined, as sklearn's zero_division=0); `confusion`: {labels, matrix}
    with matrix[i][j] the rows of true label i predicted as label j."""
    idx = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred):
        if g in idx and p in idx:
            matrix[idx[g]][idx[p]] += 1
    rows = {}
    for i, lab in enumerate(labels):
        tp, support, predicted = matrix[i][i], sum(matrix[i]), sum(r[i] for r in matrix)
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        rows[lab] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if tp else 0.0,
                     "support": support}
    return {"per_class": rows, "confusion": {"labels": list(labels), "matrix": matrix}}


def report(gold: list[str], pred: list[str], labels: list[str]) -> dict:
    """Accuracy, macro-F1, the majority-class rate (what always answering one class scores), the
    predicted label counts, and `accuracy_warning` when the model answers one class for everything
    or does not beat the majority rate: a collapsed classifier's accuracy looks like success on
    skewed data (0.947 on a 95/5 split) while its macro-F1 is about 0.49."""
    n = max(len(gold), 1)
    acc = sum(p == g for p, g in zip(pred, gold)) / n
    majority = max((gold.count(lab) for lab in labels), default=0) / n
    predicted = {lab: pred.count(lab) for lab in labels}
    out = {"accuracy": acc, "macro_f1": macro_f1(gold, pred, labels), "n": len(gold), "majority": majority,
           "predicted": predicted, **per_class(gold, pred, labels)}
    used = [lab for lab, k in predicted.items() if k]
    if len(used) == 1 and len(set(gold)) > 1:
        out["collapsed"] = used[0]   # one class for every row: never shown as a success (report, compare, eval)
        out["accuracy_warning"] = (f"the classifier answers {used[0]!r} for all {len(pred)} held-out rows "
                                   f"(accuracy {acc:.3f} = that class's rate; macro-F1 {out['macro_f1']:.3f}). "
                                   "Try data.balance: sample or weight")
    elif len(set(gold)) > 1 and acc <= majority:
        out["accuracy_warning"] = (f"accuracy {acc:.3f} does not beat always answering the majority class "
                                   f"({majority:.3f}); macro-F1 {out['macro_f1']:.3f}")
    return out


# The shared-prompt path holds the cached keys and values of at most this many (row x token) positions at once,
# across all layers: 32k positions of SmolLM2-135M in fp32 (30 layers x 2 x 3 heads x 64) are about 1.4 GB.
CACHE_TOKENS = 32768


@torch.no_grad()
def score_candidates(model, prompts: list[list[int]], cands: list[list[int]], *, pad_id, device, precision,
           batch_size, shared: bool = True) -> torch.Tensor:
    """(rows, candidates) summed log-probabilities of each candidate after each prompt:
    score[r, k] = sum_t log p(cands[k][t] | prompts[r] + cands[k][:t]).

    Single-token candidates: one forward per prompt scores them all. Longer ones, with `shared` and a model
    that reads the batch as given (`_shares_prompt`): each prompt runs once and every candidate continues
    from its cached keys and values (`_shared_prompt_scores`); otherwise (`shared=False`, virtual tokens)
    one sequence prompt + candidate per (prompt, candidate) pair (`_pair_scores`), C times the prompt work."""
    fast = shared and any(len(c) > 1 for c in cands) and _shares_prompt(model)
    scores = torch.empty(len(prompts), len(cands))
    for i in track(range(0, len(prompts), batch_size), "label scores", total=len(prompts), step=batch_size):
        chunk = prompts[i:i + batch_size]
        out = _shared_prompt_scores(model, chunk, cands, pad_id=pad_id, device=device, precision=precision) \
            if fast else None
        scores[i:i + len(chunk)] = out if out is not None else _pair_scores(
            model, chunk, cands, pad_id=pad_id, device=device, precision=precision)
    return scores


def _shares_prompt(model) -> bool:
    """A model that reads input_ids as given: no virtual tokens in front (prompt or p-tuning: logit offset)
    and no past keys of its own (prefix tuning), which a shared prompt cache would clash with."""
    return sequence_layout(model) == SequenceLayout()


def _cache_name(model) -> str:
    """The forward's (and its output's) name for the key/value cache: `cache` from transformers 5.25 on
    (`past_key_values` is deprecated there), `past_key_values` before. A PEFT wrapper passes it on by name."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _shared_prompt_scores(model, chunk: list[list[int]], cands: list[list[int]], *, pad_id, device,
                          precision) -> torch.Tensor | None:
    """(B, C) candidate scores from ONE forward of the B prompts, left-padded to P with a mask and position
    ids cumsum(mask) - 1: the next-token log-probs at the last column score every candidate's first token,
    and the cache continues into the candidates' remaining tokens (`_continuations`), at most CACHE_TOKENS
    cached positions per forward. None when the model returns no cache (the caller then scores pairs)."""
    B, P = len(chunk), max(map(len, chunk))
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    mask = torch.zeros((B, P), dtype=torch.long)
    for r, p in enumerate(chunk):
        ids[r, P - len(p):], mask[r, P - len(p):] = torch.tensor(p), 1
    ids, mask = ids.to(device), mask.to(device)
    with autocast(device, precision):
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1)
    kw = _cache_name(model)
    if getattr(out, kw, None) is None:
        return None
    first = out.logits[:, -1].float().log_softmax(-1)             # (B, vocab) after each whole prompt
    scores = first[:, [c[0] for c in cands]].cpu()                 # (B, C): every candidate's first token
    longer = [k for k, c in enumerate(cands) if len(c) > 1]
    width = P + max(len(cands[k]) for k in longer) - 1             # cached + new positions per continued row
    group = max(1, CACHE_TOKENS // (B * width))                    # candidates per continuation forward
    for g in range(0, len(longer), group):
        ks = longer[g:g + group]   # the last group may take the cache itself; earlier ones a copy
        cache = getattr(out, kw) if g + group >= len(longer) else copy.deepcopy(getattr(out, kw))
        scores[:, ks] += _continuations(model, cache, mask, [cands[k] for k in ks], pad_id=pad_id, device=device,
                                        precision=precision)
    return scores


def _continuations(model, cache, mask: torch.Tensor, cands: list[list[int]], *, pad_id, device,
                   precision) -> torch.Tensor:
    """(B, G) summed log-probs of tokens 2..n of G candidates after B cached prompts (`mask`: (B, P)).
    The cache is repeated to row b * G + k (prompt b, candidate k), which reads tokens 1..n-1 right-padded
    to M columns, at positions len(prompt b) + 0..M-1. The cache is extended in place."""
    B, G, M = mask.shape[0], len(cands), max(map(len, cands)) - 1
    ids = torch.full((G, M), pad_id, dtype=torch.long)
    tgt = torch.full((G, M), IGNORE, dtype=torch.long)          # tgt[k, t]: the token that ids[k, t] predicts
    for k, c in enumerate(cands):
        ids[k, :len(c) - 1], tgt[k, :len(c) - 1] = torch.tensor(c[:-1]), torch.tensor(c[1:])
    ids, tgt = ids.repeat(B, 1).to(device), tgt.repeat(B, 1).to(device)   # (B * G, M)
    prompt_mask = mask.repeat_interleave(G, 0)                             # (B * G, P)
    cache.batch_repeat_interleave(G)
    pos = prompt_mask.sum(-1, keepdim=True) + torch.arange(M, device=device)
    with autocast(device, precision):
        logits = model(input_ids=ids, attention_mask=torch.cat([prompt_mask, (tgt != IGNORE).long()], 1),
                       position_ids=pos, use_cache=True, **{_cache_name(model): cache}).logits   # (B * G, M, vocab)
    logits = logits.float()
    lp = logits.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)   # (B * G, M)
    return torch.where(tgt != IGNORE, lp, torch.zeros_like(lp)).sum(-1).view(B, G).cpu()


def _pair_scores(model, chunk: list[list[int]], cands: list[list[int]], *, pad_id, device,
                 precision) -> torch.Tensor:
    """(B, C) scores with the loss module's batching and logits: one sequence per prompt when every
    candidate is one token, else one prompt + candidate per pair (what virtual tokens need)."""
    single = all(len(c) == 1 for c in cands)
    packing = sequence_layout(model).packing
    scores = torch.empty(len(chunk), len(cands))
    if single:
        exs = [Example(p, [IGNORE] * len(p), "", 0, j) for j, p in enumerate(chunk)]
    else:
        exs = [Example(p + c, [IGNORE] * len(p) + c, "", 0, j * len(cands) + k)
               for j, p in enumerate(chunk) for k, c in enumerate(cands)]
    batch = collate(exs, pad_id, packing=packing, row_tokens=max(len(e.input_ids) for e in exs) * 4).to(device)
    if single:  # the next-token distribution at each prompt's last position
        last = torch.tensor([(r, s + n - 1) for r, s, n in batch.spans], device=device)
        cols, inv = torch.unique(last[:, 1], return_inverse=True)
        with autocast(device, precision):
            logits = lm_logits(model, batch, cols)
        lp = logits[last[:, 0], inv].float().log_softmax(-1)[:, [c[0] for c in cands]]  # (B, C)
        for (eid, row) in zip(batch.ids, lp):
            scores[eid] = row.cpu()
        return scores
    with autocast(device, precision):
        logits = lm_logits(model, batch, batch.keep)
    tgt = batch.targets[:, batch.keep]
    lp = logits.float().log_softmax(-1).gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    full = torch.zeros(batch.targets.shape, device=device)
    full[:, batch.keep] = torch.where(tgt != IGNORE, lp, torch.zeros_like(lp))
    for eid, (r, s, n) in zip(batch.ids, batch.spans):
        scores[eid // len(cands), eid % len(cands)] = full[r, s:s + n].sum().cpu()
    return scores


@torch.no_grad()
def label_accuracy(model, formatter, rows: list[dict], *, device: str, precision: str = "bf16",
                   batch_size: int = 16, shots: list[dict] = ()) -> dict:
    """Accuracy by label likelihood; with `shots` (training rows), k-shot prompting of the same model."""
    gold, scores = label_scores(model, formatter, rows, device=device, precision=precision, batch_size=batch_size,
                                shots=shots)
    return report(gold, [formatter.labels[i] for i in scores.argmax(1).tolist()], formatter.labels)


@torch.no_grad()
def label_scores(model, formatter, rows: list[dict], *, device: str, precision: str = "bf16",
                 batch_size: int = 16, shots: list[dict] = ()) -> tuple[list[str], torch.Tensor]:
    """(gold labels, (rows, labels) summed log-probability of each label word after each row's prompt)."""
    tok, labels = formatter.tok, formatter.labels
    examples = [formatter.prompt_response(r) for r in shots]
    bos = bos_prefix(tok)
    cands = [tok(lab, add_special_tokens=False)["input_ids"] for lab in labels]
    pairs = [formatter.prompt_response(r) for r in rows]
    gold = [label for _, label in pairs]
    alone = tok([formatter.prompt_text(p) for p, _ in pairs], add_special_tokens=False)["input_ids"]
    budget, label_len = formatter.dcfg.max_length, max(map(len, cands))
    for i, ids in enumerate(alone):   # an over-long row: its text cut as in training, the label kept
        if len(bos) + len(ids) + label_len > budget:
            pairs[i] = fitted_prompt(formatter, rows[i], budget, len(bos) + label_len)
            alone[i] = tok(formatter.prompt_text(pairs[i][0]), add_special_tokens=False)["input_ids"]
    if examples:   # the shots go before each (fitted) question
        alone = tok([formatter.prompt_text(p, examples) for p, _ in pairs], add_special_tokens=False)["input_ids"]
    prompts = [bos + ids for ids in alone]
    with eval_mode(model):
        scores = score_candidates(model, prompts, cands, pad_id=tok.pad_token_id, device=device, precision=precision,
                        batch_size=batch_size)
    return gold, scores


@torch.no_grad()
def class_accuracy(model, formatter, rows: list[dict], *, device: str, precision: str = "bf16",
                   batch_size: int = 16, shots: list[dict] = ()) -> dict:
    """The same report as label_accuracy, for a classification head: argmax of its logits."""
    gold, logits = class_scores(model, formatter, rows, device=device, precision=precision, batch_size=batch_size)
    return report(gold, [formatter.labels[i] for i in logits.argmax(1).tolist()], formatter.labels)


@torch.no_grad()
def class_scores(model, formatter, rows: list[dict], *, device: str, precision: str = "bf16",
                 batch_size: int = 16, shots: list[dict] = ()) -> tuple[list[str], torch.Tensor]:
    """(gold labels, (rows, labels) head logits); a row whose label is not one of the head's is skipped."""
    tok, labels = formatter.tok, formatter.labels
    lenient = formatter.dcfg.model_copy(update={"on_error": "skip", "too_long": "truncate"})
    exs, _ = tokenize_classes(rows, tok, lenient, labels, formatter)   # a row with an unknown label: skipped
    make_batch = batcher(model, task="sequence_classification", pad_id=tok.pad_token_id, packing=False,
                         row_tokens=0)
    out = [torch.empty(0, len(labels))]
    with eval_mode(model):
        for i in track(range(0, len(exs), batch_size), "accuracy", total=len(exs), step=batch_size):
            batch = make_batch(exs[i:i + batch_size]).to(device)
            with autocast(device, precision):
                out.append(class_logits(model, batch).float().cpu())
    return [labels[e.labels[0]] for e in exs], torch.cat(out)


ACCURACY = {"causal_lm": label_accuracy, "sequence_classification": class_accuracy}
# (gold, (rows, labels) scores whose softmax is the model's label distribution): what probes compare
LABEL_SCORES = {"causal_lm": label_scores, "sequence_classification": class_scores}
