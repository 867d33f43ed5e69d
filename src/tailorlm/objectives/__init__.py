"""Training objectives beside `sft` (forward.LOSSES, the answers' token loss): a registry like the
methods', each entry one function in one file that turns a batch's sequence log-probabilities into a
loss per preference pair.

    dpo     Direct Preference Optimization (Rafailov et al. 2023)      objectives/dpo.py
    simpo   Simple Preference Optimization (Meng et al. 2024)         objectives/simpo.py

A preference batch (data.batching.collate_pairs) holds each pair's chosen sequence and rejected
sequence; `pair_logps` (objectives/loss.py) turns it into PairLogps: the summed log-probability of
each answer (prompt tokens carry no label) and its token count; an objective turns the policy's
PairLogps (and the reference's, where `reference` is True) into a PairLoss: the loss of each pair and
the implicit rewards its accuracy and margin are read from. The run's loss (objectives/loss.py) and
the `preference` evaluator (eval/evaluators.py) both go through `pair_loss`, so training and
evaluation score a pair the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import dpo, simpo


@dataclass(frozen=True)
class PairLogps:
    """Per pair (tensors of shape (pairs,)): each answer's log-probability summed over its tokens, and
    its number of tokens."""
    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor


@dataclass(frozen=True)
class PairLoss:
    """Per pair: the loss (with its graph), and the implicit rewards of the chosen and rejected answers
    (detached): accuracy is the share with chosen > rejected, the margin their mean difference."""
    losses: torch.Tensor
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor


@dataclass(frozen=True)
class Settings:
    """train.preference resolved: beta, label smoothing, and SimPO's target margin gamma."""
    beta: float
    label_smoothing: float = 0.0
    gamma: float = 0.0


@dataclass(frozen=True)
class Objective:
    """loss(policy, reference or None, settings) -> PairLoss; `reference`: whether it needs the
    reference model's log-probabilities; `beta`: its default train.preference.beta."""
    loss: Callable[[PairLogps, Optional[PairLogps], Settings], PairLoss]
    reference: bool
    beta: float


OBJECTIVES: dict[str, Objective] = {
    "dpo": Objective(dpo.dpo, reference=True, beta=0.1),
    "simpo": Objective(simpo.simpo, reference=False, beta=2.0),
}


def settings(tc) -> Settings:
    """The objective's settings from train (TrainConfig): beta null is the objective's own, SimPO's
    gamma null is beta / 2 (the paper's gamma/beta ratio of 0.5)."""
    p = tc.preference
    beta = p.beta if p.beta is not None else OBJECTIVES[tc.objective].beta
    gamma = p.gamma if p.gamma is not None else (beta / 2 if tc.objective == "simpo" else 0.0)
    return Settings(beta=beta, label_smoothing=p.label_smoothing, gamma=gamma)


def pin(tc) -> None:
    """Write the defaults a preference objective resolved into train.preference, so the run's
    config.yaml records the beta (and SimPO's gamma) it trained with."""
    if tc.objective not in OBJECTIVES:
        return
    s = settings(tc)
    tc.preference.beta = s.beta
    if tc.objective == "simpo":
        tc.preference.gamma = s.gamma


def pair_loss(name: str, s: Settings, policy: PairLogps, reference: Optional[PairLogps]) -> PairLoss:
    """The objective `name`'s PairLoss (the one call training and evaluation share)."""
    return OBJECTIVES[name].loss(policy, reference, s)
