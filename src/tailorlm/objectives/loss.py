"""A preference objective as the run's loss, and its figures: per training step (the step's record)
and over held-out pairs (the `preference` evaluator). Both score a batch of pairs the same way: the
sequence log-probabilities of the policy (`pair_logps`) and of the reference (`Reference`), an
objective's PairLoss, then a Tally of

    chosen_logp     mean over pairs of the chosen answer's summed log-probability (nats)
    rejected_logp   the same for the rejected answer
    reward_margin   mean of chosen reward - rejected reward (the objective's implicit rewards)
    pref_accuracy   share of pairs whose chosen reward is greater than the rejected one's
    pref_loss       mean of the objective's loss (the evaluator's; a step records it as `loss`)
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..data.batching import Batch, collate_pairs
from ..data.tokenize import IGNORE
from ..device import autocast
from ..forward import eval_mode, lm_logits
from . import OBJECTIVES, PairLogps, PairLoss, Settings, pair_loss


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


class Tally:
    """Sums over pairs, read out as means (`means`), for a step's micro-batches or an evaluation's batches."""

    def __init__(self):
        self.n, self.sums = 0, dict.fromkeys(("chosen_logp", "rejected_logp", "reward_margin", "pref_accuracy",
                                             "pref_loss"), 0.0)

    def add(self, policy: PairLogps, out: PairLoss) -> None:
        margin = out.chosen_reward - out.rejected_reward
        for key, v in (("chosen_logp", policy.chosen), ("rejected_logp", policy.rejected), ("reward_margin", margin),
                       ("pref_accuracy", (margin > 0).float()), ("pref_loss", out.losses)):
            self.sums[key] = self.sums[key] + v.detach().sum()   # (on the device: read once, in means)
        self.n += len(out.losses)

    def means(self) -> dict:
        return {k: float(v) / self.n for k, v in self.sums.items()} if self.n else {}


class PreferenceLoss:
    """The run's loss_fn for train.objective dpo / simpo: (model, batch) -> (the loss summed over the
    batch's pairs, pairs); the step divides by the pairs of the whole step (Batch.n_loss), so a step's
    loss is the mean over its pairs whatever the accumulation. Each call's figures are tallied until
    `record()` reads them out for the step's record (the loss itself is the step's `loss`)."""

    def __init__(self, name: str, s: Settings, reference: Reference | None):
        self.name, self.s, self.reference = name, s, reference
        self.tally = Tally()

    def __call__(self, model, batch):
        ref = self.reference.logps(model, batch) if OBJECTIVES[self.name].reference else None
        policy = pair_logps(model, batch)
        out = pair_loss(self.name, self.s, policy, ref)
        self.tally.add(policy, out)
        return out.losses.sum(), batch.pairs

    def record(self) -> dict:
        means, self.tally = self.tally.means(), Tally()
        means.pop("pref_loss", None)
        return means


@torch.no_grad()
def score_pairs(model, examples: list, name: str, s: Settings, reference: Reference | None, *, pad_id: int,
                device: str, precision: str, batch_size: int) -> dict:
    """The Tally's means over held-out pairs. `reference` None: the model is its own reference (the
    base model at step 0, where every DPO reward is 0)."""
    tally, needs = Tally(), OBJECTIVES[name].reference
    with eval_mode(model):
        for i in range(0, len(examples), batch_size):
            batch = collate_pairs(examples[i:i + batch_size], pad_id).to(device)
            with autocast(device, precision):
                policy = pair_logps(model, batch)
                ref = (policy if reference is None else reference.logps(model, batch)) if needs else None
            tally.add(policy, pair_loss(name, s, policy, ref))
    return tally.means()
