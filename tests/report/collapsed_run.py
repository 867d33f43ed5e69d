"""Real tiny classification runs on skewed airline tweets (120 negative, 6 others to train on; a test
file of 40 negative, 10 others, of which eval scores 40): trained long enough (32 steps, the last
step's weights kept) the tiny Llama answers 'negative' for every held-out row, a collapse whose
accuracy rises from 0.225 to the majority rate; stopped at 16 steps it still answers two labels and
gains honestly. Shared by the report's and eval's tests."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tailorlm.train import train

from ..conftest import real_tweets, tiny_config, write_jsonl

SKEWED = ("data.format=classification", "data.max_length=96", "data.val_max=16", "train.lr=1e-2",
          "train.eval_every=4", "train.save_every=4", "train.threads=1", "eval.max_examples=40", "eval.batch_size=8",
          "eval.keep_best=false", "output.overwrite=true")


# the bare text, unweighted: the collapse at 32 steps and the honest run at 16 were found with these (the
# label-naming prompt and class weights of data.prompt_template / data.balance `auto` move both)
BARE = {"prompt_template": "{text}", "balance": "none"}


def skewed_files(root: Path) -> tuple[Path, Path]:
    rows = real_tweets()
    random.Random(0).shuffle(rows)
    neg = [r for r in rows if r["label"] == "negative"][:160]
    other = [r for r in rows if r["label"] != "negative"][:40]
    tr, te = neg[:120] + other[:6], neg[120:] + other[30:]
    random.Random(1).shuffle(tr)
    random.Random(1).shuffle(te)
    return write_jsonl(root / "train.jsonl", tr), write_jsonl(root / "test.jsonl", te)


def skewed_run(root: Path, model: Path, steps: int) -> Path:
    train_f, test_f = skewed_files(root)
    out = root / f"run{steps}"
    train(tiny_config(out, model, train_f, *SKEWED, f"train.steps={steps}", data={"test": str(test_f), **BARE}), quiet=True)
    return out


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory, tiny_llama) -> Path:
    run = skewed_run(tmp_path_factory.mktemp("skewed"), tiny_llama, 32)
    s = summary(run)   # what the tests rely on: a collapse that looks like a gain
    assert s["final"]["collapsed"] == "negative" and "collapsed" not in s["base"]
    assert s["final"]["accuracy"] > s["base"]["accuracy"] and s["final"]["macro_f1"] > s["base"]["macro_f1"]
    return run


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory, tiny_llama) -> Path:
    run = skewed_run(tmp_path_factory.mktemp("skewed"), tiny_llama, 16)
    s = summary(run)
    assert "collapsed" not in s["final"] and s["final"]["macro_f1"] > s["base"]["macro_f1"]
    return run
