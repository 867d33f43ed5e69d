"""`tailorlm train --resume RUN` of a run with nothing left to train says so at once, from the folder
alone (issue 27): no model is built and nothing in the run is rewritten; asked for more steps, it
trains on; stopped half-way through those, it resumes them."""
from __future__ import annotations

import json

import pytest

from tailorlm.commands import main
from tailorlm.run.folder import RunDir

from ..conftest import tiny_config
from ..run.test_kills_lose_nothing import snapshot
from ..tiny_models import one_thread  # noqa: F401  (fixture)

MORE = ("train.steps=4", "train.eval_every=4", "train.save_every=4")


class Built(Exception):
    """The run's start was reached: a model was about to be built."""


def test_resume_of_a_finished_run_says_so_without_building_the_model(tmp_path, tiny_llama, tweets_text_file, capsys,
                                                                    monkeypatch):
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, "eval.metrics=[val_loss]", file=tmp_path / "tiny.yaml")
    assert main(["train", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    before = snapshot(run)

    def built(*a, **k):
        raise Built()

    with monkeypatch.context() as m:
        m.setattr("tailorlm.train.setup.build", built)
        assert main(["train", "--resume", str(run), "--quiet"]) == 0
        out, err = capsys.readouterr()
        assert f"{run} is finished (2 steps): nothing to resume" in err and "train.steps=N (N > 2)" in err
        assert "metric" in out and "val_loss" in out and f"run folder: {run}" in out   # its summary, as train ends
        assert main(["train", "--resume", str(run), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["final"] == RunDir(run).summary()["final"]
        assert snapshot(run) == before                           # nothing rewritten, not even config.yaml
        with pytest.raises(Built):                               # more steps: a resume has work to do
            main(["train", "--resume", str(run), "--quiet", *MORE])

    assert main(["train", "--resume", str(run), "--quiet", *MORE]) == 0, capsys.readouterr().err[-2000:]
    assert RunDir(run).summary()["steps"] == 4
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0   # config.yaml now says 4: finished again
    assert f"{run} is finished (4 steps)" in capsys.readouterr().err


def test_a_run_stopped_after_its_summary_resumes_its_new_steps(tmp_path, tiny_llama, tweets_text_file, capsys):
    """A finished run asked for more steps and killed after a checkpoint past its old summary is not
    finished: its step records run past summary.json's, and the resume trains the rest."""
    from tailorlm.config import load_config
    from tailorlm.train.loop import train

    from ..run.test_kills_lose_nothing import CrashBefore, _Crash

    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, "eval.metrics=[val_loss]", "train.save_every=1",
                      file=tmp_path / "tiny.yaml")
    assert main(["train", str(cfg), "--quiet"]) == 0
    more = load_config(RunDir(run).config_file, [*MORE, "train.save_every=1", f"output.dir={run}"])
    with pytest.raises(_Crash):
        train(more, resume=True, quiet=True, callbacks=[CrashBefore(4)])   # steps 3 trained and saved
    assert RunDir(run).summary()["steps"] == 2 and RunDir(run).finished(4) is None
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "(step 3)" in capsys.readouterr().err and RunDir(run).summary()["steps"] == 4


def test_a_run_that_stopped_early_is_finished_until_asked_for_other_steps(tmp_path, tiny_llama, tweets_text_file,
                                                                         capsys):
    """Stopped early (here by a callback, as patience or a forgetting budget stop it), a run is done at
    fewer steps than train.steps: a plain resume says so; one naming other train.steps trains on."""
    from tailorlm.config import load_config
    from tailorlm.train import Callback
    from tailorlm.train.loop import train

    class StopAt2(Callback):
        def on_step_end(self, run, rec):
            if run.step == 2:
                run.stop("enough for this test")

    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, "eval.metrics=[val_loss]", *MORE)
    assert train(cfg, quiet=True, callbacks=[StopAt2()])["stopped_early"] == "enough for this test"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert f"{run} is finished (2 steps)" in err and "stopped early: enough for this test" in out
    assert RunDir(run).finished(4) is not None and RunDir(run).finished(5) is None
    assert main(["train", "--resume", str(run), "--quiet", "train.steps=5", "train.eval_every=5",
                 "train.save_every=5"]) == 0, capsys.readouterr().err[-2000:]
    assert RunDir(run).summary()["steps"] == 5 and load_config(RunDir(run).config_file).train.steps == 5
