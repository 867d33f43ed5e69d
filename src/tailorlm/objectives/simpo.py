"""SimPO: Simple Preference Optimization with a Reference-Free Reward (Meng, Xia and Chen 2024,
arXiv 2405.14734), as the authors' trainer (princeton-nlp/SimPO) computes it, label smoothing too."""
from __future__ import annotations

import torch.nn.functional as F


def simpo(policy, reference, s):
    """The SimPO loss of each pair (no reference model: `reference` is not read):

        logits = beta * (log pi(yw|x) / |yw| - log pi(yl|x) / |yl|) - gamma
        loss   = -(1 - ls) * log sigmoid(logits) - ls * log sigmoid(-logits)

    log pi(y|x) / |y| the answer's mean log-probability per token (length-normalised), beta the reward
    scale (train.preference.beta, default 2.0), gamma the target reward margin (train.preference.gamma,
    default beta / 2: the paper's gamma/beta ratio of 0.5), ls the label smoothing (0: the paper's loss).
    The implicit reward of an answer is r = beta * log pi(y|x) / |y|."""
    from . import PairLoss

    chosen = policy.chosen / policy.chosen_tokens
    rejected = policy.rejected / policy.rejected_tokens
    logits = s.beta * (chosen - rejected) - s.gamma
    ls = s.label_smoothing
    losses = -(1 - ls) * F.logsigmoid(logits) - ls * F.logsigmoid(-logits)
    return PairLoss(losses, (s.beta * chosen).detach(), (s.beta * rejected).detach())
