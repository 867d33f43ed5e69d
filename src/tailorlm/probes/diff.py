"""What tuning changed on the same text: per-token log-probabilities under the base and the tuned
model, teacher-forced, the KL divergence between their next-token distributions, the tokens whose
probability rose or fell most, and greedy continuations of both.

At each scored position t (the user's text, the template after it, and the answer):
    log p_m(x_t | x_<t)                                    for m in {base, tuned}
    KL_t = sum_v p_base(v | x_<t) (log p_base(v | x_<t) - log p_tuned(v | x_<t))   >= 0
the forward KL(base || tuned) that the retention probe and distillation use (Hinton et al. 2015).
Both sides come from one model in memory where the method has an off switch (`pair.base_view`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.batching import collate
from ..data.tokenize import IGNORE, Example
from ..forward import eval_mode, lm_logits
from .explain_text import shown, token_strings, vocab_text
from .pair import base_view

TOP_POSITIONS = 5   # positions (highest KL) whose probability shifts are kept per input
TOP_TOKENS = 3      # rising and falling tokens kept at each of them


@dataclass
class Diff:
    tokens: list[str]           # each scored token's text (explain_text.token_strings: they join to the text)
    ids: list[int]
    region: list[str]           # "text" (the user's), "template", or "answer", per token
    logp_base: list[float]
    logp_tuned: list[float]
    kl: list[float]             # KL(base || tuned) of the distribution that predicts the token
    shifts: list[dict] = field(default_factory=list)   # [{pos, token, kl, rose: [[tok, p_base, p_tuned]], fell}]
    greedy_base: str = ""
    greedy_tuned: str = ""

    @property
    def greedy_differs(self) -> bool:
        return self.greedy_base.strip() != self.greedy_tuned.strip()

    def to_dict(self) -> dict:
        return {**self.__dict__, "greedy_differs": self.greedy_differs}


def _logprobs(model, seqs: list[list[int]], starts: list[int], pad_id: int) -> list[torch.Tensor]:
    """Per sequence, (len - start, vocab) float log-probabilities of the distributions that predict
    tokens start..end, teacher-forced; padded one row per sequence, as evaluation batches them."""
    exs = [Example(s, [IGNORE] * st + s[st:], "", 0, i) for i, (s, st) in enumerate(zip(seqs, starts))]
    batch = collate(exs, pad_id, packing=False).to(next(model.parameters()).device)
    logits = lm_logits(model, batch, batch.keep).float().log_softmax(-1)   # (rows, K, vocab)
    tgt = batch.targets[:, batch.keep]                                     # (rows, K)
    return [logits[i][tgt[i] != IGNORE] for i in range(len(seqs))]


def _paired(model, cfg, chunks: list[tuple], fn) -> list[tuple]:
    """[(fn(tuned, chunk), fn(base, chunk))] per chunk. With an off switch the same model is toggled
    per chunk; full fine-tuning keeps the base folder loaded beside the tuned model for the loop."""
    out = []
    with base_view(model, cfg) as base:
        if base is not model:
            return [(fn(model, c), fn(base, c)) for c in chunks]
    for c in chunks:
        tuned = fn(model, c)
        with base_view(model, cfg) as b:
            out.append((tuned, fn(b, c)))
    return out


def _compare(lp_b: torch.Tensor, lp_t: torch.Tensor, ids: list[int], texts: list[str],
             tok) -> tuple[list, list, list, list]:
    """(log p base, log p tuned, KL per position, shifts at the TOP_POSITIONS highest-KL positions);
    `texts`: each of `ids` as shown."""
    tgt = torch.tensor(ids)[:, None]
    kl = (lp_b.exp() * (lp_b - lp_t)).sum(-1).clamp(min=0)     # (n,); clamp: float rounding below 0
    dp = lp_t.exp() - lp_b.exp()                                # (n, vocab) probability change
    shifts = []
    for pos in kl.topk(min(TOP_POSITIONS, len(kl))).indices.tolist():
        def entry(v):
            return [vocab_text(tok, v), float(lp_b[pos, v].exp()), float(lp_t[pos, v].exp())]
        shifts.append({"pos": pos, "token": texts[pos], "kl": float(kl[pos]),
                       "rose": [entry(v) for v in dp[pos].topk(TOP_TOKENS).indices.tolist()],
                       "fell": [entry(v) for v in (-dp[pos]).topk(TOP_TOKENS).indices.tolist()]})
    return (lp_b.gather(1, tgt)[:, 0].tolist(), lp_t.gather(1, tgt)[:, 0].tolist(), kl.tolist(), shifts)


@torch.no_grad()
def diff(model, cfg, tok, rendered: list, answers: list[list[int]], *, batch_size: int = 8,
         max_new_tokens: int = 24) -> list[Diff]:
    """One Diff per input: the prompt (Rendered) followed by its answer's token ids, scored from the
    user's first token to the end, under base and tuned; and both models' greedy continuations."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    seqs = [r.ids + a for r, a in zip(rendered, answers)]
    starts = [max(1, r.span[0]) for r in rendered]
    idx = list(range(len(seqs)))
    chunks = [tuple(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
    with eval_mode(model):
        pairs = _paired(model, cfg, chunks, lambda m, c: _logprobs(m, [seqs[i] for i in c], [starts[i] for i in c], pad))
        greedy = _paired(model, cfg, chunks, lambda m, c: greedy_text(m, tok, [rendered[i].ids for i in c],
                                                                       max_new_tokens))
    out = []
    for c, (lt, lb), (gt, gb) in zip(chunks, pairs, greedy):
        for k, i in enumerate(c):
            r, ids = rendered[i], seqs[i][starts[i]:]
            texts = _token_texts(r, ids, starts[i], tok)
            pb, pt, kl, shifts = _compare(lb[k], lt[k], ids, texts, tok)
            out.append(Diff(texts, ids, _regions(r, len(ids), starts[i]), pb, pt, kl, shifts, gb[k], gt[k]))
    return out


def _regions(r, n: int, start: int) -> list[str]:
    s, e = r.span
    return ["text" if start + j < e and start + j >= s else "answer" if start + j >= len(r.ids) else "template"
            for j in range(n)]


def _token_texts(r, ids: list[int], start: int, tok) -> list[str]:
    """The user's tokens as the slices of their own text; the rest as what each adds to the decoded text."""
    s, _ = r.span
    decoded = token_strings(tok, ids)
    return [r.pieces[start + j - s] if 0 <= start + j - s < len(r.pieces) else decoded[j] for j in range(len(ids))]


def greedy_text(model, tok, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
    """Greedy continuations of token-id prompts, left-padded into one batch."""
    if max_new_tokens <= 0:
        return [""] * len(prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    dev = next(model.parameters()).device
    out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad)
    return [shown(t) for t in tok.batch_decode(out[:, width:], skip_special_tokens=True)]
