"""The chunked LM loss (train.loss_chunk, on by default) equals the plain loss, value and every
gradient, on each model family that changes its logits after the head (issue 23: Gemma-2's forward
soft-capped the skipped head's output, the hidden states, and the chunks capped again: 6.1644 against
the plain 6.2112 on a tiny Gemma2Config(final_logit_softcapping=5))."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from tailorlm.data.batching import collate
from tailorlm.data.tokenize import IGNORE, Example
from tailorlm.forward import LOSSES
from tailorlm.train.levers import FAMILY_POST, chunked_lm_loss_sum, logit_post, logit_scale, loss_function

from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

SMALL = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=128, pad_token_id=0, eos_token_id=1,
             bos_token_id=2)
# each family's setting at a value far from neutral, so a wrong loss shows (the defaults: Gemma-2's cap 30,
# Cohere's scale 0.0625, Granite's 1.0)
SETTING = {"final_logit_softcapping": 2.0, "logit_scale": 0.25, "logits_scaling": 4.0}
# the families transformers can build at this size (gemma3: multimodal; gemma3n_text, granitemoehybrid:
# their configs refuse these dimensions)
BUILDABLE = ["gemma2", "gemma3_text", "vaultgemma", "nanochat", "cohere", "cohere2", "granite", "granitemoe",
             "granitemoeshared"]


def tiny(model_type: str):
    key = FAMILY_POST[model_type]
    cfg = AutoConfig.for_model(model_type, **SMALL, **{key: SETTING[key]})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()


def batch():
    rng = random.Random(0)
    exs = []
    for i in range(5):
        n, k = rng.randint(6, 14), rng.randint(1, 5)
        ids = [rng.randrange(3, 128) for _ in range(n)]
        exs.append(Example(ids, [IGNORE] * (n - k) + ids[n - k:], "f", i, id=i))
    return collate(exs, pad_id=0, packing=False, row_tokens=64)


def loss_and_grads(model, fn, b):
    model.zero_grad(set_to_none=True)
    s, n = fn(model, b)
    (s / n).backward()
    return float(s.detach()) / n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_every_family_with_a_post_head_op_is_buildable_or_said_why():
    assert set(BUILDABLE) <= set(FAMILY_POST)
    assert set(FAMILY_POST) - set(BUILDABLE) == {"gemma3", "gemma3n", "gemma3n_text", "granitemoehybrid"}


@pytest.mark.parametrize("model_type", BUILDABLE)
def test_chunked_loss_equals_the_plain_loss_and_gradients(model_type):
    model, b = tiny(model_type), batch()
    key = FAMILY_POST[model_type]
    assert logit_post(model) == [(key, SETTING[key])] and logit_scale(model) is None
    assert loss_function("causal_lm", 4, model).func is chunked_lm_loss_sum     # not the fallback
    plain, pg = loss_and_grads(model, LOSSES["causal_lm"], b)
    chunked, cg = loss_and_grads(model, lambda m, x: chunked_lm_loss_sum(m, x, 4), b)
    assert chunked == pytest.approx(plain, rel=1e-5), (model_type, chunked, plain)
    assert pg.keys() == cg.keys() and len(pg) > 4
    for k in pg:
        assert torch.allclose(cg[k], pg[k], rtol=1e-4, atol=1e-7), (model_type, k)
    # the model is left as it was: its setting back, its head its own
    with torch.no_grad():
        again = LOSSES["causal_lm"](model, b)[0].item() / b.n_targets
    assert again == pytest.approx(plain, rel=1e-6)


def test_a_setting_a_family_does_not_apply_gets_the_plain_loss(tmp_path):
    """A Llama config carrying logit_scale: Llama's forward ignores it, so the chunks must too, and the
    loss falls back to the plain one (said once) rather than guess."""
    model = tiny("gemma2")
    model.config.logits_scaling = 3.0        # gemma2 does not read it
    said = []
    assert loss_function("causal_lm", 4, model, said.append) is LOSSES["causal_lm"]
    assert said == ["[tailorlm] train.loss_chunk: off for this model (logits_scaling=3: it scales its logits)"]
