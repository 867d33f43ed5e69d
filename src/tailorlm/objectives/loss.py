"""A preference objective as the run's loss, and its figures: per training step (the step's record)
and over held-out pairs (the `preference` evaluator). Both tally PairLosses the same way.

    chosen_logp     mean over pairs of the chosen answer's summed log-probability (nats)
    rejected_logp   the same for the rejected answer
    reward_margin   mean of chosen reward - rejected reward (the objective's implicit rewards)
    pref_accuracy   share of pairs whose chosen reward is greater than the rejected one's
    pref_loss       mean of the objective's loss (the evaluator's; a step records it as `loss`)
"""
from __future__ import annotations

import torch

from ..data.batching import collate_pairs
from ..device import autocast
from ..forward import eval_mode
from . import OBJECTIVES, PairLogps, PairLoss, Settings, pair_loss
from .logps import Reference, pair_logps


class Tally:
    """Sums over pairs, read out as means (`means`), for a step's micro-batches or an evaluation's batches."""

    def __init__(self):
        self.n, self.sums = 0, dict.fromkeys(("chosen_logp", "rejected_logp", "reward_margin", "pref_accuracy",
                                             "pref_loss"), 0.0)

    def add(self, policy: PairLogps, out: PairLoss) -> None:
        margin = out.chosen_reward - out.rejected_reward
        for key, v in (("chosen_logp", policy.chosen), ("rejected_logp", policy.rejected), ("reward_margin", margin),
                       ("pref_accuracy", (margin > 0).float()), ("pref_loss", out.losses)):
            self.sums[key] += float(v.detach().sum())
        self.n += len(out.losses)

    def means(self) -> dict:
        return {k: v / self.n for k, v in self.sums.items()} if self.n else {}


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
