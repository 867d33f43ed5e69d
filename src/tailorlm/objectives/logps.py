"""Sequence log-probabilities of a preference batch, for the policy and for the reference model."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..data.batching import Batch
from ..data.tokenize import IGNORE
from ..forward import eval_mode, lm_logits
from . import PairLogps


def sequence_logps(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows,) each row's log-probability of its targets summed, and (rows,) its target count. Logits
    are computed at the target columns only (batch.keep), in fp32 for the log-softmax."""
    logits = lm_logits(model, batch, batch.keep).float()          # (rows, K, vocab)
    targets = batch.targets[:, batch.keep]                         # (rows, K)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return -nll.view(targets.shape).sum(1), (targets != IGNORE).sum(1)


def pair_logps(model, batch: Batch) -> PairLogps:
    """The PairLogps of a preference batch (batching.collate_pairs: chosen rows, then rejected rows)."""
    lp, n = sequence_logps(model, batch)
    k = batch.pairs
    return PairLogps(lp[:k], lp[k:2 * k], n[:k].to(lp.dtype), n[k:2 * k].to(lp.dtype))


class Reference:
    """The reference policy DPO measures its rewards against: the model the run starts from. With an
    adapter method, the tuned model itself inside the method's `disabled(model)` (adapters off: the
    base's function, no second copy); where the method has no such switch (full fine-tuning), `base`
    (the starting model, loaded again: a finished run scored by `tailorlm eval`), else a frozen copy
    of `model` made now, before its first update. Scored under torch.no_grad, in eval mode (no
    dropout: the same reference numbers every time)."""

    def __init__(self, model, method, base=None):
        self.method, self.frozen = method, None
        if method.disabled(model) is None:
            self.frozen = (base if base is not None else copy.deepcopy(model)).requires_grad_(False).eval()

    @torch.no_grad()
    def logps(self, model, batch: Batch) -> PairLogps:
        if self.frozen is not None:
            return pair_logps(self.frozen, batch)
        with eval_mode(model), self.method.disabled(model):
            return pair_logps(model, batch)
