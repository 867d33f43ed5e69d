"""Preference tuning (train.objective dpo / simpo): the losses equal their papers' formulas computed by hand
(and TRL's, where TRL is installed), gradients too; DPO's reference through the method's `disabled()` is the
base model; tiny models learn synthetic preferences on every method, through accumulation and a resume."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from tailorlm.config import DataConfig
from tailorlm.data.batching import collate_pairs
from tailorlm.data.formats import Formatter
from tailorlm.data.preference import tokenize_pairs
from tailorlm.data.tokenize import IGNORE
from tailorlm.methods import METHODS
from tailorlm.models.load import load_model
from tailorlm.objectives import Settings
from tailorlm.objectives.loss import PreferenceLoss, Reference, pair_logps
from tailorlm.train import train
from tailorlm.train.log import read_metrics

from ..conftest import tiny_config, write_jsonl
from ..method_cases import CASES
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

METHOD_NAMES = ["full", "lora", "bottleneck", "prompt", "prefix", "ia3"]


def synthetic(lo: int, hi: int) -> list[dict]:
    """Varied prompts; the chosen answer one fixed pattern, the rejected another (which the random tiny
    model happens to prefer at the start: tuning must turn it round)."""
    return [{"prompt": f"How was flight {i}?", "chosen": "Great service, thanks.", "rejected": "Terrible delay again."}
            for i in range(lo, hi)]


def tuned(tiny_llama, name: str, seed: int = 0):
    """The tiny Llama carrying `name`'s method, every trainable parameter moved off its start (as if trained)."""
    model, tok = load_model(str(tiny_llama))
    cfg = METHODS[name].Config(**CASES[name].config)
    model = METHODS[name].apply(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model, tok


def pairs_batch(tok, rows):
    d = DataConfig(train="unused.jsonl", max_length=64)
    exs, _ = tokenize_pairs([{"_file": "p.jsonl", "_line": i + 1, **r} for i, r in enumerate(rows)], tok, d,
                            Formatter("preference", tok, d))
    return exs, collate_pairs(exs, tok.pad_token_id)


def hand_logp(model, ex, mean: bool = False) -> torch.Tensor:
    """An answer's log-probability by hand: one unpadded sequence, log_softmax, gather the next tokens."""
    ids = torch.tensor([ex.input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    nxt, trained = ids[0, 1:], torch.tensor(ex.labels[1:]) != IGNORE
    lp = logp.gather(1, nxt[:, None])[:, 0][trained]
    return lp.mean() if mean else lp.sum()


def grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_dpo_loss_and_gradients_equal_the_formula_by_hand(tiny_llama):
    model, tok = tuned(tiny_llama, "lora")
    base, _ = load_model(str(tiny_llama))   # the reference by hand: the base model, loaded on its own
    exs, batch = pairs_batch(tok, synthetic(0, 3) + [{"prompt": "Hi", "chosen": "Hello there.", "rejected": "Go."}])
    beta, ls = 0.5, 0.2
    loss_fn = PreferenceLoss("dpo", Settings(beta=beta, label_smoothing=ls), Reference(model, METHODS["lora"]))
    s, n = loss_fn(model, batch)
    (s / n).backward()
    ours, record = grads(model), loss_fn.record()
    model.zero_grad()

    pol = torch.stack([torch.stack([hand_logp(model, e), hand_logp(model, e.rejected)]) for e in exs])
    with torch.no_grad():
        ref = torch.stack([torch.stack([hand_logp(base, e), hand_logp(base, e.rejected)]) for e in exs])
    logits = beta * ((pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1]))
    hand = (-(1 - ls) * F.logsigmoid(logits) - ls * F.logsigmoid(-logits)).mean()
    hand.backward()
    assert n == 4
    assert_close(s / n, hand, rtol=1e-5, atol=1e-6)
    for k, g in grads(model).items():
        assert_close(ours[k], g, rtol=1e-3, atol=1e-5 * float(g.abs().max()))
    assert any(g.abs().sum() > 0 for g in ours.values())
    margin = beta * ((pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])).detach()
    assert_close(record["reward_margin"], float(margin.mean()), rtol=1e-4, atol=1e-6)
    assert record["pref_accuracy"] == float((margin > 0).float().mean())
    assert_close(record["chosen_logp"], float(pol[:, 0].detach().mean()), rtol=1e-5, atol=1e-5)

    # TRL's loss on the same log-ratios (its sigmoid loss with label smoothing: cDPO), when TRL is installed
    trl = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    fake = SimpleNamespace(alpha=0.0, beta=beta, loss_type="sigmoid", label_smoothing=ls,
                           accelerator=SimpleNamespace(device="cpu"))
    losses, chosen_r, rejected_r = trl.CPOTrainer.cpo_loss(fake, (pol[:, 0] - ref[:, 0]).detach(),
                                                           (pol[:, 1] - ref[:, 1]).detach())
    assert_close(losses.mean(), (s / n).detach(), rtol=1e-5, atol=1e-6)
    assert_close(float((chosen_r - rejected_r).mean()), record["reward_margin"], rtol=1e-4, atol=1e-6)


def test_simpo_loss_and_gradients_equal_the_formula_by_hand(tiny_llama):
    model, tok = tuned(tiny_llama, "lora", seed=1)
    exs, batch = pairs_batch(tok, synthetic(0, 3) + [{"prompt": "Hi", "chosen": "Hello there, friend.", "rejected": "Go."}])
    beta, gamma = 2.0, 1.0
    loss_fn = PreferenceLoss("simpo", Settings(beta=beta, gamma=gamma), None)   # reference-free
    s, n = loss_fn(model, batch)
    (s / n).backward()
    ours = grads(model)
    model.zero_grad()
    mean = torch.stack([torch.stack([hand_logp(model, e, mean=True), hand_logp(model, e.rejected, mean=True)])
                        for e in exs])
    hand = -F.logsigmoid(beta * (mean[:, 0] - mean[:, 1]) - gamma).mean()
    hand.backward()
    assert_close(s / n, hand, rtol=1e-5, atol=1e-6)
    for k, g in grads(model).items():
        assert_close(ours[k], g, rtol=1e-3, atol=1e-5 * float(g.abs().max()))

    trl = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    fake = SimpleNamespace(alpha=0.0, beta=beta, loss_type="simpo", simpo_gamma=gamma, label_smoothing=0.0,
                           accelerator=SimpleNamespace(device="cpu"))
    losses, _, _ = trl.CPOTrainer.cpo_loss(fake, mean[:, 0].detach(), mean[:, 1].detach())
    assert_close(losses.mean(), (s / n).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_reference_is_the_base_model(tiny_llama, name):
    """The method's disabled() (full fine-tuning: a frozen copy made before the weights move) scores as the
    base model loaded on its own, while the tuned model itself does not."""
    model, tok = load_model(str(tiny_llama))
    model = METHODS[name].apply(model, METHODS[name].Config(**CASES[name].config))
    ref = Reference(model, METHODS[name])
    assert (ref.frozen is not None) == (name == "full")
    with torch.no_grad():   # training moves the method's parameters (full: the base weights themselves)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    base, _ = load_model(str(tiny_llama))
    _, batch = pairs_batch(tok, synthetic(0, 3))
    want = pair_logps(base.eval(), batch)
    got = ref.logps(model, batch)
    assert_close(got.chosen, want.chosen, rtol=1e-5, atol=1e-5)
    assert_close(got.rejected, want.rejected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(pair_logps(model.eval(), batch).chosen, want.chosen, atol=1e-3)


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    return write_jsonl(d / "train.jsonl", synthetic(0, 64)), write_jsonl(d / "val.jsonl", synthetic(100, 132))


def pref_config(out, tiny_llama, pair_files, *overrides):
    train_file, val_file = pair_files
    return tiny_config(out, tiny_llama, train_file, "train.steps=20", "train.batch_size=8", "train.eval_every=20",
                       "train.save_every=20", *overrides, data={"format": "auto", "val": str(val_file), "max_length": 64})


@pytest.mark.parametrize("objective, method", [("dpo", m) for m in METHOD_NAMES] + [("simpo", "lora"), ("simpo", "full")])
def test_tiny_model_learns_held_out_preferences(tmp_path, tiny_llama, pair_files, objective, method):
    cfg = pref_config(tmp_path / "run", tiny_llama, pair_files, f"train.objective={objective}", f"method={method}")
    summary = train(cfg, quiet=True)
    assert summary["data"]["format"] == "preference" and cfg.eval.metric == "pref_loss"
    assert summary["base"]["pref_accuracy"] < 0.5   # the start prefers the rejected pattern (DPO: every reward 0)
    assert summary["final"]["pref_accuracy"] > 0.95 and summary["final"]["reward_margin"] > 0
    steps = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(steps) == 20 and all(k in steps[-1] for k in ("chosen_logp", "rejected_logp", "reward_margin",
                                                             "pref_accuracy"))
    beta = {"dpo": 0.1, "simpo": 2.0}[objective]   # the objective's own default, written into config.yaml
    assert f"beta: {beta}" in (tmp_path / "run" / "config.yaml").read_text()


def test_accumulation_gives_the_same_steps(tmp_path, tiny_llama, pair_files):
    """Two micro-batches of 4 pairs make the same steps as one of 8: the loss is a mean over the step's pairs."""
    for name, over in (("one", ["train.batch_size=8"]), ("two", ["train.batch_size=4", "train.grad_accum=2"])):
        train(pref_config(tmp_path / name, tiny_llama, pair_files, "train.objective=dpo", "train.steps=3", *over),
              quiet=True)
    recs = {n: [r for r in read_metrics(tmp_path / n / "metrics.jsonl") if "loss" in r] for n in ("one", "two")}
    for a, b in zip(recs["one"], recs["two"], strict=True):
        for k in ("loss", "chosen_logp", "rejected_logp", "reward_margin"):
            assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


class _Crash(Exception):
    pass


class CrashAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, run, rec):
        if run.step == self.step:
            raise _Crash()


def test_resume_gives_the_same_steps_full_fine_tuning(tmp_path, tiny_llama, pair_files):
    """Full fine-tuning's reference is a copy of the base made before a resumed checkpoint loads: a run
    stopped after step 4 and resumed from step 3 makes the same steps as one that ran through."""
    def cfg(name):
        return pref_config(tmp_path / name, tiny_llama, pair_files, "train.objective=dpo", "method=full",
                           "train.steps=6", "train.save_every=3", "train.eval_every=6", "train.lr=1e-3")
    train(cfg("ref"), quiet=True)
    with pytest.raises(_Crash):
        train(cfg("run"), quiet=True, callbacks=[CrashAt(4)])
    train(cfg("run"), resume=True, quiet=True)
    per_step = {n: {r["step"]: (r["loss"], r["reward_margin"]) for r in read_metrics(tmp_path / n / "metrics.jsonl")
                    if "loss" in r} for n in ("ref", "run")}
    assert per_step["run"].keys() == per_step["ref"].keys() == set(range(1, 7))
    for step, (loss, margin) in per_step["ref"].items():
        assert_close(per_step["run"][step][0], loss, rtol=1e-5, atol=1e-6)
        assert_close(per_step["run"][step][1], margin, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_eval_command_scores_a_finished_run_as_training_did(tmp_path, tiny_llama, pair_files, method):
    """`tailorlm eval RUN` finds the reference itself (full fine-tuning: the starting model loaded again; an
    adapter: switched off) and repeats the run's final preference scores."""
    from tailorlm.commands.evaluate import evaluate_target

    cfg = pref_config(tmp_path / "run", tiny_llama, pair_files, "train.objective=dpo", f"method={method}",
                      "train.steps=4", "train.eval_every=4", "train.save_every=4", "train.lr=1e-3")
    summary = train(cfg, quiet=True)
    got = evaluate_target(str(tmp_path / "run"), [])
    for k in ("pref_accuracy", "reward_margin", "pref_loss", "chosen_logp", "rejected_logp"):
        assert_close(got["scores"][k], summary["final"][k], rtol=1e-4, atol=1e-5)
        assert_close(got["base"][k], summary["base"][k], rtol=1e-4, atol=1e-5)
    assert summary["final"]["reward_margin"] != 0 and got["scored_on"]["pref_accuracy"] == ("val", 8)


def test_lr_auto_races_on_the_preference_loss(tmp_path, tiny_llama, pair_files):
    cfg = pref_config(tmp_path / "run", tiny_llama, pair_files, "train.objective=dpo", "train.lr=auto",
                      "train.steps=60", "train.eval_every=60", "train.save_every=60")
    summary = train(cfg, quiet=True)
    chosen = summary["chosen"]
    assert chosen["score"] == "pref_loss" and chosen["race"]
    assert_close(chosen["base_score"], 0.6931, rtol=0, atol=1e-3)   # log 2: the start is its own reference
    assert cfg.train.lr in cfg.train.lr_grid and summary["final"]["pref_accuracy"] > 0.95


def test_plan_counts_both_sides_of_a_pair_and_the_reference_copy(tmp_path, tiny_llama, pair_files):
    """`tailorlm plan`: a pair is two rows, its answers' logits unchunked, and DPO with full fine-tuning holds
    a frozen copy of the model (an adapter's reference is the same model, adapter off: nothing more)."""
    from tailorlm.plan import plan

    def planned(*over):
        return plan(pref_config(tmp_path / "run", tiny_llama, pair_files, "train.batch_size=4", *over), "64GiB")

    sft, dpo = planned("method=full", "train.loss_chunk=null"), planned("method=full", "train.objective=dpo")
    assert dpo.parts["reference"] == dpo.total_params * 4 and sft.parts["reference"] == 0
    assert 1.9 * sft.parts["logits"] < dpo.parts["logits"] < 2.1 * sft.parts["logits"]   # twice the rows
    assert planned("train.objective=dpo").parts["reference"] == 0   # lora: the reference is the model, adapter off
    assert dpo.total > sft.total
