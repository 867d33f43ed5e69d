"""DPO: Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model", arXiv 2305.18290), with the label smoothing of
conservative DPO (Mitchell 2023) / robust DPO (Chowdhury et al. 2024), as TRL's `sigmoid` loss."""
from __future__ import annotations

import torch.nn.functional as F


def dpo(policy, reference, s):
    """The DPO loss of each pair:

        logits = beta * ((log pi(yw|x) - log ref(yw|x)) - (log pi(yl|x) - log ref(yl|x)))
        loss   = -(1 - ls) * log sigmoid(logits) - ls * log sigmoid(-logits)

    yw the chosen answer, yl the rejected one, log pi(y|x) the policy's log-probability of the answer
    summed over its tokens (the prompt's tokens not counted), ls = train.preference.label_smoothing (the
    share of pairs taken to be mislabelled; 0 is the paper's loss). The implicit reward of an answer is
    r = beta * (log pi(y|x) - log ref(y|x)).

    The reference ref is the model the run starts from: for an adapter method, the same model with its
    adapter switched off (the method's `disabled(model)`, under torch.no_grad: no second copy); for full
    fine-tuning, whose `disabled` is None, a frozen copy of the starting model (objectives/loss.py:
    Reference). A reference precomputed once over the data (no reference forward per step) is not
    offered yet."""
    from . import PairLoss

    chosen = policy.chosen - reference.chosen
    rejected = policy.rejected - reference.rejected
    logits = s.beta * (chosen - rejected)
    ls = s.label_smoothing
    losses = -(1 - ls) * F.logsigmoid(logits) - ls * F.logsigmoid(-logits)
    return PairLoss(losses, (s.beta * chosen).detach(), (s.beta * rejected).detach())
