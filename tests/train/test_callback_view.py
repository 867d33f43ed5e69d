"""What a plug-in sees and may change (train/view.py RunView), the one way to add a loss term
(train/callbacks.py extra_loss: a Tensor, or LossTerms with their own backward), and the step the
evaluators see (set by the loop, not by a callback)."""
import dataclasses
import math

import pytest
import torch

from tailorlm.config import load_config
from tailorlm.train import Callback, train
from tailorlm.train.callbacks import Callbacks, LossTerm
from tailorlm.train.losses import loss_terms
from tailorlm.train.log import read_metrics
from tailorlm.train.view import RunView


def cfg_for(model_dir, data, out, **over):
    """A tiny text run: full fine-tuning, fp32, one thread, no retention, evaluations at steps 2 and 4."""
    raw = {"model": str(model_dir),
           "data": {"train": str(data), "format": "text", "max_length": 48, "val_max": 8, "audit": False},
           "method": {"name": "full"},
           "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup": 1, "log_every": 1, "eval_every": 2,
                     "save_every": 1000, "precision": "fp32", "seed": 0, "threads": 1, "device": "cpu"},
           "eval": {"max_examples": 8, "batch_size": 8, "before": False, "keep_best": False},
           "retention": {"reference": None}, "output": {"dir": str(out), "overwrite": True}}
    for k, v in over.items():
        raw[k] = {**raw[k], **v}
    return load_config(raw=raw)


def steps_of(run) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


class Looker(Callback):
    """Keeps the view of each event; notes a number at step 2; stops the run after step 3."""

    def __init__(self):
        self.views = []

    def on_step_start(self, run):
        self.views.append(run)
        if run.step == 1:
            run.note(my_number=1.5)

    def on_step_end(self, run, rec):
        if run.step == 3:
            run.stop("enough for this test")


def test_a_callback_sees_a_frozen_view_may_note_numbers_and_stop_the_run(tiny_llama, tweets_text_file, tmp_path):
    torch.set_num_threads(1)
    cb = Looker()
    s = train(cfg_for(tiny_llama, tweets_text_file, tmp_path / "r"), quiet=True, callbacks=[cb])
    v = cb.views[0]
    assert isinstance(v, RunView) and v.step == 0 and v.cfg.train.steps == 4 and v.params and v.model is not None
    assert not hasattr(v, "opt") and not hasattr(v, "guard") and not hasattr(v, "eval_ctx")   # the loop's own
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.step = 7
    assert [x.step for x in cb.views] == [0, 1, 2]   # stopped after step 3
    recs = steps_of(tmp_path / "r")
    assert recs[2]["my_number"] == 1.5 and "my_number" not in recs[1] and "my_number" not in recs[3]
    assert s["stopped_early"] == "enough for this test" and s["steps"] == 3
    assert any(r.get("stopped") == "enough for this test" for r in read_metrics(tmp_path / "r" / "metrics.jsonl"))


class Terms(Callback):
    """A LossTerm of its own (backward on its own, logged under its name) and a plain tensor (summed as
    `extra_loss`); with `bad`, a non-finite guarding term at step 2."""

    def __init__(self, bad: bool = False):
        self.bad = bad

    def extra_loss(self, run):
        p = next(iter(run.params.values()))
        yield LossTerm("my_term", 0.0 * p.sum(), value=2.0, guards=False)
        if self.bad and run.step == 1:
            yield LossTerm("my_guard", p.sum() * float("nan"))


class Plain(Callback):
    def extra_loss(self, run):
        return 0.0 * next(iter(run.params.values())).sum() + 0.25


def test_loss_terms_go_through_one_seam(tiny_llama, tweets_text_file, tmp_path):
    torch.set_num_threads(1)
    train(cfg_for(tiny_llama, tweets_text_file, tmp_path / "plain"), quiet=True)
    train(cfg_for(tiny_llama, tweets_text_file, tmp_path / "terms"), quiet=True, callbacks=[Terms(), Plain()])
    plain, terms = steps_of(tmp_path / "plain"), steps_of(tmp_path / "terms")
    # zero-gradient terms: the same training, with their numbers in each step's record, in order
    assert [r["loss"] for r in plain.values()] == [r["loss"] for r in terms.values()]
    assert all(r["my_term"] == 2.0 and r["extra_loss"] == 0.25 for r in terms.values())
    assert list(terms[1])[-2:] == ["my_term", "extra_loss"]
    train(cfg_for(tiny_llama, tweets_text_file, tmp_path / "bad"), quiet=True, callbacks=[Terms(bad=True)])
    bad = steps_of(tmp_path / "bad")
    assert "skipped" in bad[2] and math.isnan(bad[2]["loss"]) and "skipped" not in bad[3]


def test_callbacks_gather_tensors_after_their_own_terms():
    a, b = torch.tensor(1.0), torch.tensor(2.0)

    class One(Callback):
        def extra_loss(self, run):
            return LossTerm("one", a)

    class Tensor(Callback):
        def extra_loss(self, run):
            return b

    got = list(loss_terms([Tensor(), One(), Callback(), Tensor()], None))
    assert [(t.name, float(t.loss)) for t in got] == [("one", 1.0), ("extra_loss", 4.0)]
    assert LossTerm("x", a).logged() == 1.0 and LossTerm("x", a, value=3.0).logged() == 3.0


def test_the_loop_sets_the_step_the_evaluators_see(tiny_llama, tweets_text_file, tmp_path, monkeypatch):
    """Not the metrics logger (rank 0 only): with no callbacks at all, each evaluation sees its step."""
    from tailorlm.train import phases
    from tailorlm.train.loop import run_loop
    from tailorlm.train.setup import setup_run

    seen, orig = [], phases.evaluate

    def evaluate(model, ctx):
        seen.append(ctx.step)
        return orig(model, ctx)

    monkeypatch.setattr(phases, "evaluate", evaluate)
    torch.set_num_threads(1)
    run = setup_run(cfg_for(tiny_llama, tweets_text_file, tmp_path / "r"), quiet=True)
    run.callbacks = Callbacks([])
    run_loop(run)
    assert seen == [2, 4]
