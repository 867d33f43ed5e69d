"""The retention probe: how far the tuned model has drifted from the base on general text.

    ref_nll   per-token NLL of the reference's target tokens (the base's value is stored at step 0)
    kl        KL(base || tuned) of next-token distributions at fixed reference positions, in nats,
              averaged over positions; the base's log-probabilities at those positions are kept
              from step 0 (positions x vocab floats, a few MB), so no second model is needed.

Both read only the reference's targets: for the `auto` reference the base model's sampled answer,
never the prompt's chat template or instruction (reference.py), so template drift is not counted as
forgetting; for a text file, every token.
"""
from __future__ import annotations

import torch

from ..data.batching import collate
from ..data.tokenize import IGNORE, Example
from ..device import autocast
from ..eval.metrics import val_loss
from ..forward import eval_mode, lm_logits
from ..progress import track


def kl_positions(examples: list[Example], every: int = 8) -> list[Example]:
    """The same examples with targets only at every `every`-th of their target tokens (the 8th, 16th,
    ...): where KL is read. Prompt tokens (labels IGNORE) are never counted or kept; for a text whose
    every token is a target this is every `every`-th position."""
    out = []
    for e in examples:
        labels, k = [], 0
        for t in e.labels:
            k += t != IGNORE                      # k: how many targets so far, this one included
            labels.append(t if t != IGNORE and k % every == 0 else IGNORE)
        out.append(Example(e.input_ids, labels, e.file, e.line, e.id))
    return out


@torch.no_grad()
def next_token_logprobs(model, examples: list[Example], *, pad_id: int, device: str, precision: str,
                        batch_size: int = 8) -> torch.Tensor:
    """(positions, vocab) log-probabilities at the examples' target columns, in example order."""
    out = []
    with eval_mode(model):
        for i in track(range(0, len(examples), batch_size), "KL positions", total=len(examples), unit="texts",
                       step=batch_size):
            b = collate(examples[i:i + batch_size], pad_id, packing=False).to(device)
            with autocast(device, precision):
                logits = lm_logits(model, b, b.keep)               # (rows, K, vocab)
            mask = b.targets[:, b.keep] != -100                      # (rows, K)
            out.append(logits.float().log_softmax(-1)[mask].cpu())  # (positions, vocab)
    return torch.cat(out) if out else torch.empty(0)


def kl_divergence(base_logp: torch.Tensor, tuned_logp: torch.Tensor) -> float:
    """Mean over positions of KL(base || tuned) = sum_v p_base (log p_base - log p_tuned)."""
    return float((base_logp.exp() * (base_logp - tuned_logp)).sum(-1).mean())


class Probe:
    def __init__(self, reference: list[Example], *, pad_id: int, device: str, precision: str, batch_size: int = 8):
        self.ref, self.kl_ex = reference, kl_positions(reference)
        self.kw = dict(pad_id=pad_id, device=device, precision=precision)
        self.batch_size = batch_size
        self.base: dict | None = None
        self.base_logp: torch.Tensor | None = None

    def measure(self, model) -> dict:
        nll = val_loss(model, self.ref, batch_size=self.batch_size, packing=False, name="reference NLL",
                       **self.kw)["loss"]
        logp = next_token_logprobs(model, self.kl_ex, batch_size=self.batch_size, **self.kw)
        if self.base is None:  # step 0: this is the base model
            self.base, self.base_logp = {"ref_nll": nll}, logp
        return {"ref_nll": nll, "ref_nll_change": nll - self.base["ref_nll"],
                "kl_to_base": kl_divergence(self.base_logp, logp)}
