"""The training and validation loss: cross-entropy over label-bearing positions only.

`keep` selects the columns with a target before the LM head, so a batch of short answers after
long prompts computes (rows x K x vocab) logits instead of (rows x T x vocab). The sum (not the mean)
is returned with its token count, so gradient accumulation and data parallelism can normalise by
the number of target tokens in the whole global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.batching import Batch
from ..data.tokenize import IGNORE


def lm_loss_sum(model, batch: Batch) -> tuple[torch.Tensor, int]:
    out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=batch.attention_mask,
                use_cache=False, logits_to_keep=batch.keep)
    logits = out.logits                              # (rows, K, vocab)
    targets = batch.targets[:, batch.keep]           # (rows, K)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return loss, batch.n_targets
