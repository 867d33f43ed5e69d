"""Signs of life (issue 14, item 6): the base-model evaluation, the retention reference sampling and
the evaluations show progress; in a log file (stderr not a terminal) as plain lines every N seconds,
never tqdm's carriage returns piled into one line."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from tailorlm.progress import Progress, phase, quiet, track

from .conftest import real_tweets, tiny_config, write_jsonl
from .tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

REPO = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    bar = Progress(10, "base model evaluation: val_loss", "rows", stream=out, every=0)
    for _ in range(10):
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 10 and lines[-1].startswith("[tailorlm] base model evaluation: val_loss: 10/10 rows (100%)")
    assert "left" in lines[4]   # an estimate of the wait while it lasts


def test_plain_lines_are_throttled_and_a_terminal_gets_a_bar():
    out = io.StringIO()
    bar = Progress(1000, "train", "steps", stream=out, every=3600)
    for _ in range(1000):
        bar.update()
    bar.close()
    assert out.getvalue() == ""   # under N seconds: nothing to say
    tty = Terminal()
    bar = Progress(5, "train", "steps", stream=tty, every=0)
    for _ in range(5):
        bar.update()
    bar.close()
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()   # tqdm's bar on a terminal


def test_track_counts_rows_only_inside_a_phase(capsys, monkeypatch):
    monkeypatch.setenv("TAILORLM_PROGRESS_EVERY", "0")
    assert list(track(range(0, 10, 4), "val_loss", total=10, step=4)) == [0, 4, 8]
    assert capsys.readouterr().err == ""   # a direct call (benchmark, test): silent
    with phase("final evaluation"):
        assert list(track(range(0, 10, 4), "val_loss", total=10, step=4)) == [0, 4, 8]
        with quiet():
            list(track(range(3), "accuracy", total=3))
    err = capsys.readouterr().err.splitlines()
    assert [e.split(": ")[2].split(" ")[0] for e in err] == ["4/10", "8/10", "10/10"]
    assert all(e.startswith("[tailorlm] final evaluation: val_loss:") for e in err)


def test_a_run_logged_to_a_file_shows_each_long_wait(tmp_path, tiny_llama):
    """`tailorlm train ... 2> log`: a line per step, evaluation batch and reference sample batch, and
    not one carriage return."""
    data = write_jsonl(tmp_path / "tweets.jsonl", real_tweets(120))
    tiny_config(tmp_path / "run", tiny_llama, data, "data.format=classification", "data.max_length=96",
                "data.val_max=24", "train.steps=4", "train.lr=1e-3", "train.log_every=10", "train.eval_every=4",
                "train.save_every=4", "train.threads=1", "eval.max_examples=24", "eval.batch_size=8",
                "retention.reference=auto", "retention.samples=8", "retention.sample_tokens=8",
                method={"name": "lora", "r": 4}, file=tmp_path / "cfg.yaml")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "HF_HUB_OFFLINE": "1",
           "TAILORLM_PROGRESS_EVERY": "0"}
    with open(tmp_path / "log", "w") as log:   # stderr is a file, not a terminal
        done = subprocess.run([sys.executable, "-m", "tailorlm", "train", str(tmp_path / "cfg.yaml")], env=env,
                              stdout=log, stderr=log, timeout=600)
    text = (tmp_path / "log").read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = text.splitlines()

    def seen(prefix: str) -> list[str]:
        return [x for x in lines if x.startswith(f"[tailorlm] {prefix}")]

    assert seen("retention reference: sampling: 8/8 texts")
    assert seen("retention reference: reference NLL: 4/4 rows")
    assert seen("base model evaluation: val_loss: 12/12 rows")       # (val: 10% of 120 rows)
    assert seen("base model evaluation: label scores: 12/12 rows")
    assert seen("evaluation at step 4: val_loss: 12/12 rows")
    assert seen("evaluation at step 4: KL positions: 4/4 texts")
    assert [x.split(": ")[1].split(" ")[0] for x in seen("train:")] == ["1/4", "2/4", "3/4", "4/4"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4
