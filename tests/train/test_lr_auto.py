"""train.lr: auto (issue 26): a successive-halving race picks the lr (train/lr_race.py), recorded so a
rerun is exact, resumed to the same numbers after a kill, within 15% of the run's steps; train.steps:
auto: steps from the data size, with early stopping."""
import json

import pytest

from tailorlm.config import load_config
from tailorlm.methods import METHODS
from tailorlm.run import RunDir
from tailorlm.train import lr_race
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train

from ..conftest import tiny_config
from ..run.test_kills_lose_nothing import CrashBefore, _Crash
from .test_resume import assert_same_run, per_step

STEPS = 80
# one lr that diverges (10), one too small to learn in the race (1e-5), one that learns (1e-2)
AUTO = ("train.lr=auto", "train.lr_grid=[1e-5,1e-2,10.0]", f"train.steps={STEPS}", "train.eval_every=40",
        "train.save_every=20", "train.keep_last=5", "train.threads=1")


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, tiny_llama, tweets_text_file):
    out = tmp_path_factory.mktemp("auto") / "run"
    summary = train(tiny_config(out, tiny_llama, tweets_text_file, *AUTO, "eval.metric=auto"), quiet=True)
    return out, summary


def test_the_race_picks_the_lr_that_learns_and_drops_the_one_that_diverges(auto_run):
    _, summary = auto_run
    chosen = summary["chosen"]
    assert chosen["lr"] == 1e-2 and chosen["score"] == "val_loss"
    by_lr = {d["lr"]: d for d in chosen["race"]}
    assert by_lr[10.0]["out"] and by_lr[1e-2]["out"] is None
    assert by_lr[1e-2]["score"] < by_lr[1e-5]["score"]
    assert all(d["score"] <= chosen["base_score"] for d in chosen["race"] if d["out"] is None)


def test_the_chosen_lr_is_in_config_yaml_metrics_and_summary_and_a_rerun_from_it_is_exact(auto_run, tmp_path):
    out, summary = auto_run
    folder = RunDir.at(out)
    assert folder.config().train.lr == 1e-2
    assert json.loads(folder.summary_file.read_text())["chosen"] == summary["chosen"]
    events = [r for r in read_metrics(folder.metrics_file) if "chosen" in r]
    assert len(events) == 1 and events[0]["chosen"]["lr"] == 1e-2 and events[0]["step"] == 0
    again = tmp_path / "again"   # the config as the run recorded it: a fixed lr, no race
    s = train(folder.config([f"output.dir={again}"]), quiet=True)
    assert "chosen" not in s and per_step(again) == per_step(out)


def test_the_race_costs_at_most_15_percent_of_the_steps(auto_run):
    _, summary = auto_run
    chosen = summary["chosen"]
    assert chosen["cost_steps"] == sum(d["steps_run"] for d in chosen["race"]) > 0
    assert chosen["cost_steps"] <= 0.15 * STEPS
    for n in range(1, 9):
        for steps in (1, 10, 37, 100, 1000, 12345):
            rounds, first = lr_race.plan(n, steps)
            assert first * sum(a * 2 ** k for k, a in enumerate(rounds)) <= 0.15 * steps
            assert all(b == max(1, a // 2) for a, b in zip(rounds, rounds[1:]))


# every choice auto, on a slice of the tweets (3 epochs of it at batch 4: under 100 steps, clamped up to 100)
EVERY_AUTO = ("train.lr=auto", "train.lr_grid=[1e-5,1e-2,10.0]", "train.steps=auto", "eval.metric=auto",
              "data.limit=60", "train.eval_every=25", "train.save_every=25", "train.keep_last=5", "train.threads=1")


@pytest.fixture(scope="module")
def every_auto_run(tmp_path_factory, tiny_llama, tweets_text_file):
    out = tmp_path_factory.mktemp("every-auto") / "run"
    summary = train(tiny_config(out, tiny_llama, tweets_text_file, *EVERY_AUTO), quiet=True)
    return out, summary


def test_steps_auto_comes_from_the_data_size_with_early_stopping_and_is_recorded(every_auto_run):
    out, summary = every_auto_run
    auto = summary["data"]["steps_auto"]
    assert auto["steps"] == min(3000, max(100, -(-3 * auto["examples"] // 4)))
    cfg = RunDir.at(out).config()
    assert cfg.train.steps == auto["steps"] and cfg.eval.patience == 3 and cfg.train.lr == summary["chosen"]["lr"]
    assert summary["chosen"]["cost_steps"] <= 0.15 * cfg.train.steps


def test_too_few_steps_for_a_race_uses_the_default_lr_and_says_why(tmp_path, tiny_llama, tweets_text_file):
    s = train(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, "train.lr=auto", "train.steps=4"),
              quiet=True)
    lr = METHODS["lora"].default_lr
    assert s["chosen"]["lr"] == lr and "too few" in s["chosen"]["skipped"] and s["chosen"]["cost_steps"] == 0
    assert RunDir.at(tmp_path / "run").config().train.lr == lr


@pytest.mark.parametrize("killed", ["race", "training"])
def test_a_run_with_every_choice_auto_killed_resumes_to_the_same_numbers(killed, every_auto_run, tmp_path,
                                                                         tiny_llama, tweets_text_file, monkeypatch):
    out = tmp_path / "run"
    cfg = tiny_config(out, tiny_llama, tweets_text_file, *EVERY_AUTO, file=tmp_path / "run.yaml")
    crash = []
    if killed == "race":   # killed while the second candidate races: no decision recorded yet
        real, calls = lr_race._candidate, []

        def dies_in_the_second(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise _Crash()
            return real(*a, **k)

        monkeypatch.setattr(lr_race, "_candidate", dies_in_the_second)
    else:
        crash = [CrashBefore(30)]   # after the checkpoint at step 20
    with pytest.raises(_Crash):
        train(load_config(cfg), quiet=True, callbacks=crash)
    assert RunDir.at(out).config().train.lr == ("auto" if killed == "race" else 1e-2)
    monkeypatch.undo()
    s = train(load_config(cfg), resume=True, quiet=True)   # the same command, lr: auto
    assert s["chosen"] == every_auto_run[1]["chosen"] and s["steps"] == every_auto_run[1]["steps"]
    assert_same_run(out, every_auto_run[0])
