"""Every speed lever (train.loss_chunk, train.frozen_bottom, train.compile, train.optimizer_impl) gives
the plain path's loss and every trainable parameter's gradient within 1e-4 relative, on a tiny Llama
through tailorlm's own setup and step; and each test checks that the lever really took another code
path (so an equality that held because nothing changed would fail). Tiny models, fp32."""
from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import pytest
import torch

from tailorlm.data.batching import collate
from tailorlm.models.arch import blocks
from tailorlm.train import setup_run
from tailorlm.train.levers import chunked_lm_loss_sum, compile_blocks
from tailorlm.train.step import task_backward, train_step

from ..conftest import tiny_config
from ..tiny_models import one_thread, tweets_cls_file  # noqa: F401  (fixtures)

REL = 1e-4


# three steps of 8, one thread, no chunked loss, no frozen cast: the plain path each lever is compared to
PLAIN = ("data.max_length=96", "train.steps=3", "train.batch_size=8", "train.threads=1", "train.loss_chunk=null",
         "train.frozen_cast=false", "train.log_every=10", "train.eval_every=50", "train.save_every=50",
         "eval.before=false", "output.overwrite=true")


def make_run(model_dir, data_file, out, fmt="classification", method=None, **train):
    cfg = tiny_config(out, model_dir, data_file, *PLAIN, data={"format": fmt}, method=method, train=train)
    run = setup_run(cfg, quiet=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # LoRA's B starts at zero, which zeroes every A gradient: start both paths elsewhere
        for name, p in sorted(run.params.items()):
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return run


def one_backward(run) -> tuple[float, dict]:
    """Step 0's micro-batch through the run's loss_fn and backward: (loss, {name: gradient})."""
    micro = [run.make_batch([run.data.train[i] for i in run.order.micro_batch(0, 0, 1)])]
    n = sum(b.n_targets for b in micro)
    loss = task_backward(run, micro, n) / n
    grads = {k: p.grad.detach().clone() for k, p in run.params.items()}
    run.opt.zero_grad(set_to_none=True)
    return loss, grads


def assert_same(a: tuple[float, dict], b: tuple[float, dict]) -> None:
    (la, ga), (lb, gb) = a, b
    assert math.isfinite(la) and la == pytest.approx(lb, rel=REL)
    assert ga.keys() == gb.keys() and ga
    nonzero = 0
    for k in ga:
        ref = gb[k].norm()
        assert (ga[k] - gb[k]).norm() <= REL * ref + 1e-12, k
        nonzero += bool(ref > 0)
    assert nonzero == len(ga)   # every gradient is compared at a non-trivial value


@pytest.mark.parametrize("fmt,chunk", [("classification", 3), ("text", 64)])
def test_chunked_loss_same_loss_and_gradients(tiny_llama, tweets_cls_file, tweets_text_file, tmp_path, fmt, chunk):
    data = tweets_cls_file if fmt == "classification" else tweets_text_file
    plain = make_run(tiny_llama, data, tmp_path / "plain", fmt)
    lever = make_run(tiny_llama, data, tmp_path / "lever", fmt, loss_chunk=chunk)
    assert lever.loss_fn.func is chunked_lm_loss_sum and plain.loss_fn is not lever.loss_fn
    calls = []   # the LM head's input shapes: one (rows, K, hidden) call plainly; (<=chunk, hidden) chunks
    hooks = [r.model.get_output_embeddings().register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
             for r in (plain, lever)]
    a = one_backward(plain)
    plain_calls, calls[:] = list(calls), []
    b = one_backward(lever)
    for h in hooks:
        h.remove()
    assert len(plain_calls) == 1 and len(plain_calls[0]) == 3
    # the lever: one pass through the skipped head (the hidden states), then the chunks, each twice
    # (forward, and recomputed in backward)
    assert len(calls[0]) == 3 and len(calls) >= 5 and all(len(s) == 2 and s[0] <= chunk for s in calls[1:])
    assert_same(b, a)


def test_chunked_loss_with_class_weights(tiny_llama, tweets_cls_file, tmp_path):
    """data.balance: weight multiplies each target's loss: the chunked sum weighs the same positions."""
    plain = make_run(tiny_llama, tweets_cls_file, tmp_path / "p")
    lever = make_run(tiny_llama, tweets_cls_file, tmp_path / "l", loss_chunk=2)
    exs = [replace(e, weight=0.5 + j / 4) for j, e in enumerate(plain.data.train[:8])]
    batch = collate(exs, plain.tok.pad_token_id, packing=True, row_tokens=96)
    assert batch.weights is not None
    plain_sum, _ = plain.loss_fn(plain.model, batch)
    lever_sum, _ = lever.loss_fn(lever.model, batch)
    assert float(lever_sum.detach()) == pytest.approx(float(plain_sum.detach()), rel=REL)
    unweighted, _ = lever.loss_fn(lever.model, collate(plain.data.train[:8], plain.tok.pad_token_id, row_tokens=96))
    assert float(unweighted.detach()) != pytest.approx(float(plain_sum.detach()), rel=1e-2)   # the weights do change it


def test_frozen_bottom_same_loss_and_gradients(tiny_llama, tweets_cls_file, tmp_path):
    """LoRA on the top block only, gradient checkpointing on: plainly the bottom block runs with grad
    (checkpointing makes the embeddings' output require it); with the lever it runs without."""
    method = {"name": "lora", "r": 4, "alpha": 8, "layers": 1}
    common = dict(method=method, gradient_checkpointing=True)
    plain = make_run(tiny_llama, tweets_cls_file, tmp_path / "p", **common)
    lever = make_run(tiny_llama, tweets_cls_file, tmp_path / "l", frozen_bottom=True, **common)
    grad_mode = {}
    for name, r in (("plain", plain), ("lever", lever)):
        # a Linear inside the bottom block (its hooks run inside the block's forward; returning None
        # keeps its output)
        inner = next(m for m in list(blocks(r.model))[0].modules() if isinstance(m, torch.nn.Linear))
        inner.register_forward_hook(lambda m, i, o, name=name: grad_mode.update({name: torch.is_grad_enabled()}))
    a, b = one_backward(plain), one_backward(lever)
    assert grad_mode == {"plain": True, "lever": False}
    assert_same(b, a)


def test_compile_same_loss_and_gradients(tiny_llama, tweets_cls_file, tmp_path):
    """Each block through torch.compile's graph capture and AOT autograd (the aot_eager backend: the
    inductor's C++ code generation takes minutes on a shared CPU; the slow test below runs it)."""
    plain = make_run(tiny_llama, tweets_cls_file, tmp_path / "p")
    lever = make_run(tiny_llama, tweets_cls_file, tmp_path / "l")
    torch._dynamo.reset()
    assert compile_blocks(lever.model, "default", backend="aot_eager") == 2
    a, b = one_backward(plain), one_backward(lever)
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in blocks(lever.model))
    assert_same(b, a)


@pytest.mark.slow
def test_compile_inductor_through_config(tiny_llama, tweets_cls_file, tmp_path):
    plain = make_run(tiny_llama, tweets_cls_file, tmp_path / "p")
    torch._dynamo.reset()
    lever = make_run(tiny_llama, tweets_cls_file, tmp_path / "l", compile="default")
    a, b = one_backward(plain), one_backward(lever)
    assert_same(b, a)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adamw_kernels_same_steps(tiny_llama, tweets_cls_file, tmp_path, impl):
    """Two optimizer steps: the second step's loss (after an update) and the parameters after it match."""
    plain = make_run(tiny_llama, tweets_cls_file, tmp_path / "p")
    lever = make_run(tiny_llama, tweets_cls_file, tmp_path / "l", optimizer_impl=impl)
    assert lever.opt.defaults[impl] is True and not plain.opt.defaults.get(impl)
    recs = {}
    for name, r in (("plain", plain), ("lever", lever)):
        recs[name] = [train_step(r, False)[0]["loss"] for _ in range(2)]
    assert recs["plain"][1] != recs["plain"][0]   # the first update changed the model
    for x, y in zip(recs["lever"], recs["plain"]):
        assert x == pytest.approx(y, rel=REL)
    for k, p in plain.params.items():
        assert (lever.params[k] - p).norm() <= REL * p.norm(), k


def test_frozen_cast_same_steps_and_fp32_outside(tiny_llama, tweets_cls_file, tmp_path):
    """bf16 autocast, two whole steps: with train.frozen_cast the frozen base weights are bf16 inside
    the step (autocast's own cast of them is skipped) and the same fp32 tensors outside it; the losses
    and the trained parameters equal the plain path's (the lever hands F.linear the values autocast
    would have made)."""
    plain = make_run(tiny_llama, tweets_cls_file, tmp_path / "p", precision="bf16", frozen_cast=False)
    lever = make_run(tiny_llama, tweets_cls_file, tmp_path / "l", precision="bf16", frozen_cast=True)
    base = next(m for m in lever.model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad)
    before = base.weight.data_ptr()
    seen = []
    hook = base.register_forward_hook(lambda m, i, o: seen.append(m.weight.dtype))
    recs = {name: [train_step(r, False)[0]["loss"] for _ in range(2)] for name, r in (("plain", plain), ("lever", lever))}
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}                      # the lever's path
    assert base.weight.dtype == torch.float32 and base.weight.data_ptr() == before   # untouched outside
    assert plain.step_scope is contextlib.nullcontext and lever.step_scope is not contextlib.nullcontext
    assert recs["plain"][1] != recs["plain"][0]
    for x, y in zip(recs["lever"], recs["plain"]):
        assert x == pytest.approx(y, rel=REL)
    for k, p in plain.params.items():
        assert (lever.params[k] - p).norm() <= REL * p.norm(), k


def test_frozen_cast_off_in_fp32(tiny_llama, tweets_cls_file, tmp_path):
    """fp32 runs have nothing to cast: the step runs as it always did."""
    run = make_run(tiny_llama, tweets_cls_file, tmp_path / "r", frozen_cast=True)
    assert run.cfg.train.frozen_cast and run.step_scope is contextlib.nullcontext


def test_default_levers_and_the_chunked_loss_falling_back_for_scaled_logits(tiny_llama):
    """On by default: loss_chunk (1024) and frozen_cast. A model that scales its logits gets the plain
    loss (said once), since the chunked one would score it wrongly; asked for directly it refuses."""
    from transformers import AutoModelForCausalLM

    from tailorlm.config import TrainConfig
    from tailorlm.errors import ConfigError
    from tailorlm.forward import LOSSES
    from tailorlm.train.levers import loss_function

    tc = TrainConfig()
    assert tc.loss_chunk == 1024 and tc.frozen_cast and tc.optimizer_impl == "default" and tc.compile == "off"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert loss_function("causal_lm", 1024, model).func is chunked_lm_loss_sum
    model.config.logit_scale = 0.5
    said = []
    assert loss_function("causal_lm", 1024, model, said.append) is LOSSES["causal_lm"]
    assert said == ["[tailorlm] train.loss_chunk: off for this model (logit_scale=0.5: it scales its logits)"]
    with pytest.raises(ConfigError, match="scales its logits"):
        chunked_lm_loss_sum(model, None, 8)
