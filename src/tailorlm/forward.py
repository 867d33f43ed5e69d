"""The model forward every layer shares. The training and validation loss: cross-entropy over label-bearing positions only, or over the
classes of a classification head; and how a batch is built and fed for a given task and model.

`keep` selects the columns with a target before the LM head, so a batch of short answers after
long prompts computes (rows x K x vocab) logits instead of (rows x T x vocab). The sum (not the mean)
is returned with its token count, so gradient accumulation and data parallelism can normalise by
the number of target tokens in the whole global batch.

What a method does to the sequence (virtual tokens in front of each row) is read from the model
(methods.sequence_layout): batching then gives each example its own row, and `lm_logits` shifts the kept
columns past the virtual positions. No method is named here.
"""
from __future__ import annotations

import contextlib
from functools import partial

import torch
import torch.nn.functional as F

from .data.batching import Batch, collate, collate_classes, collate_pairs
from .data.tokenize import IGNORE
from .methods.base import sequence_layout
from .models.arch import is_encoder


def lm_logits(model, batch: Batch, keep: torch.Tensor) -> torch.Tensor:
    """(rows, len(keep), vocab) logits at the batch's columns `keep`."""
    lay = sequence_layout(model)
    return model(input_ids=batch.input_ids, position_ids=batch.position_ids if lay.position_ids else None,
                 attention_mask=batch.attention_mask, use_cache=False,
                 logits_to_keep=keep + lay.logit_offset).logits


def lm_loss_sum(model, batch: Batch) -> tuple[torch.Tensor, int]:
    logits = lm_logits(model, batch, batch.keep)     # (rows, K, vocab)
    targets = batch.targets[:, batch.keep]           # (rows, K)
    if batch.weights is None:
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
        return loss, batch.n_targets
    per = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return (per * batch.weights[:, batch.keep].flatten()).sum(), batch.n_targets   # data.balance: weight


def class_logits(model, batch: Batch) -> torch.Tensor:
    """(rows, num_labels) logits of a sequence-classification head."""
    kw = {} if is_encoder(model) else {"use_cache": False}   # not every encoder's forward takes use_cache
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                 position_ids=batch.position_ids if sequence_layout(model).position_ids else None, **kw).logits


def class_loss_sum(model, batch: Batch) -> tuple[torch.Tensor, int]:
    logits = class_logits(model, batch).float()
    if batch.weights is None:
        return F.cross_entropy(logits, batch.targets, reduction="sum"), batch.n_targets
    per = F.cross_entropy(logits, batch.targets, reduction="none")
    return (per * batch.weights).sum(), batch.n_targets   # data.balance: weight (mean weight 1 over train)


LOSSES = {"causal_lm": lm_loss_sum, "sequence_classification": class_loss_sum}


def batcher(model, *, task: str, pad_id: int, packing: bool, row_tokens: int, pairs: bool = False):
    """examples -> Batch, as this task and this model need them: packed as configured, unless the
    method puts virtual tokens in front of each row; one padded row per example for a classifier;
    with `pairs` (preference data under a preference objective), both sequences of each pair, padded."""
    if pairs:
        return partial(collate_pairs, pad_id=pad_id)
    if task == "sequence_classification":
        return partial(collate_classes, pad_id=pad_id, left=not is_encoder(model))
    return partial(collate, pad_id=pad_id, packing=packing and sequence_layout(model).packing, row_tokens=row_tokens)


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() inside, the caller's train/eval mode restored after (even on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def left_padded(tokenizer):
    """The tokenizer pads on the left inside (batched generation continues every row at its end)."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = side
