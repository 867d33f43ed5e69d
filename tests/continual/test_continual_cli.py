"""`tailorlm continual` as a user runs it, on a tiny model and real tweets: dotted overrides reach every
stage, each stage validates on rows carved from its training data (never the rows R scores), the
console names its rows (the base model's first), a stage that answers one class for every row is
warned about, and a finished plan said finished at once, with no model or tokenizer loaded."""
from __future__ import annotations

import contextlib
import io
import json
import random
import time

import pytest
import yaml

from tailorlm.commands import main
from tailorlm.run import RunDir

from ..conftest import real_tweets, write_jsonl
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

OVERRIDES = ["train.lr=0.02", "method.r=2", "data.val_max=6"]


def _rows(path) -> list[str]:
    return [json.dumps(json.loads(x), sort_keys=True) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ran(tiny_llama, tmp_path_factory):
    """A two-stage plan run once through the command: sentiment (no test file: its scored rows are
    carved from train) then onesided (every training row says `no`, its test file says yes and no)."""
    d = tmp_path_factory.mktemp("cont")
    rows = real_tweets()
    random.Random(1).shuffle(rows)
    sentiment = write_jsonl(d / "sentiment.jsonl", [{"text": r["text"], "label": r["label"]} for r in rows[:120]])
    onesided = write_jsonl(d / "onesided.jsonl", [{"text": r["text"], "label": "no"} for r in rows[120:200]])
    test = write_jsonl(d / "onesided-test.jsonl", [{"text": r["text"], "label": "yes" if "!" in r["text"] else "no"}
                                                   for r in rows[200:240]])
    base = {"model": str(tiny_llama), "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {"steps": 6, "batch_size": 4, "lr": 1e-2, "precision": "fp32", "eval_every": 3, "save_every": 3,
                      "log_every": 1, "threads": 1},
            "eval": {"max_examples": 16}, "retention": {"samples": 4, "sample_tokens": 16}}
    plan = {"base": base, "stages": [{"name": "sentiment", "train": str(sentiment)},
                                     {"name": "onesided", "train": str(onesided), "test": str(test),
                                      "labels": ["no", "yes"]}],
            "strategy": {"name": "naive"}, "output": {"dir": str(d / "plan")}}
    (d / "plan.yaml").write_text(yaml.safe_dump(plan))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["continual", str(d / "plan.yaml"), *OVERRIDES, "--quiet"]) == 0
    return d, out.getvalue(), {"sentiment": sentiment, "onesided": onesided, "onesided-test": test}


def test_overrides_reach_every_stage_and_validation_rows_are_carved_from_training(ran):
    d, _, files = ran
    order = d / "plan" / "order-0"
    for t, name in ((1, "sentiment"), (2, "onesided")):
        cfg = RunDir.at(order / f"{t:02d}-{name}").config_raw()            # what the stage's run recorded
        assert cfg["train"]["lr"] == 0.02 and cfg["method"]["r"] == 2       # overrides in every stage
        val, heldout, train = (d / "plan" / "data" / name / f for f in ("val.jsonl", "heldout.jsonl", "train.jsonl"))
        assert cfg["data"]["val"] == str(val)                                # selection on val, not the scored rows
        assert len(_rows(val)) == 6                                          # data.val_max=6 respected
        assert not set(_rows(val)) & set(_rows(heldout))                     # never the rows R scores
        assert not set(_rows(val)) & set(_rows(train))                       # nor the rows it trains on
        # the validation rows come from the stage's training file: as many rows in all as it had
        source = len(files[name].read_text().splitlines())
        scored = 0 if name == "onesided" else len(_rows(heldout))
        assert len(_rows(train)) + len(_rows(val)) + scored == source
    # onesided has a test file: R scores exactly its rows
    assert len(_rows(d / "plan" / "data" / "onesided" / "heldout.jsonl")) == 40
    evals = [r for r in RunDir.at(order / "02-onesided").metrics() if "val_loss" in r.get("eval", {})]
    assert evals, "the stage's run evaluated its validation rows"


def test_console_rows_are_named_with_the_base_row_first_and_a_collapse_is_warned(ran):
    d, console, _ = ran
    got = json.loads((d / "plan" / "continual.json").read_text())
    o = got["orders"][0]
    rows = [x for x in console.splitlines() if x.startswith("[continual] order-0 ") and "warning" not in x]
    assert [x.split(":")[0] for x in rows] == ["[continual] order-0 base model", "[continual] order-0 stage 1 sentiment",
                                               "[continual] order-0 stage 2 onesided"]
    for line, scores in zip(rows, o["R"]):
        assert f"sentiment {scores[0]:.3f}" in line and f"onesided {scores[1]:.3f}" in line
    # stage 2 learnt from `no` rows only: it answers `no` for all 40 test rows, its accuracy the `no` rate
    assert o["collapsed"][2][1] == "no"
    scored = [json.loads(x) for x in (d / "plan" / "data" / "onesided" / "heldout.jsonl").read_text().splitlines()]
    no_rate = sum(r["response"] == "no" for r in scored[:16]) / 16              # (eval.max_examples: 16 scored)
    assert o["R"][2][1] == pytest.approx(no_rate) and 0 < no_rate < 1
    warn = [x for x in console.splitlines() if "warning" in x]
    assert any("after stage 2 (onesided) the model answers 'no' for every held-out row of onesided" in x for x in warn)
    assert "(always 'no')" in rows[2]
    page = (d / "plan" / "continual.html").read_text()
    assert "always no" in page and "after stage 2 (onesided)" in page


def _no_loading(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a finished plan loaded a model or tokenizer")

    import tailorlm.build
    import tailorlm.continual.runner as runner

    for mod, name in ((runner, "load_base"), (runner, "tokenizer_for"), (runner, "train"), (runner, "open_run"),
                      (tailorlm.build, "load_base"), (tailorlm.build, "tokenizer_for")):
        monkeypatch.setattr(mod, name, refuse)


def test_resume_of_a_finished_plan_says_so_at_once_without_loading_a_model(ran, monkeypatch):
    d, _, _ = ran
    _no_loading(monkeypatch)
    stamp = (d / "plan" / "continual.json").stat().st_mtime_ns
    for argv in (["continual", str(d / "plan.yaml"), *OVERRIDES, "--resume"], ["continual", "--resume", str(d / "plan")]):
        out = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(out):
            assert main(argv) == 0
        assert time.perf_counter() - t < 5
        assert f"the plan in {d / 'plan'} is finished" in out.getvalue() and "| naive |" in out.getvalue()
    assert (d / "plan" / "continual.json").stat().st_mtime_ns == stamp      # nothing rewritten
