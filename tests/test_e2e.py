"""End to end on the real SmolLM2-135M-Instruct and real text (slow; CI runs these too)."""
import json
import subprocess
import sys

import pytest

from tailorlm.train.loop import train

from .conftest import real_tweets, tiny_config, write_jsonl

pytestmark = pytest.mark.slow

# the real model on the library's defaults (base={}, not conftest.TINY): what a user's run gets


def test_short_lora_run_on_real_text_lowers_validation_loss(smollm2_dir, tweets_text_file, tmp_path):
    cfg = tiny_config(tmp_path / "run", "smollm2-135m-instruct", tweets_text_file, "data.format=text",
                      "data.max_length=64", "data.val_max=24", "method.r=8", "method.alpha=16", "train.steps=12",
                      "train.batch_size=8", "train.lr=1e-3", "train.warmup=2", "train.eval_every=12", "train.save_every=12",
                      "eval.max_examples=24", base={})
    s = train(cfg, quiet=True)
    assert s["final"]["val_loss"] < s["base"]["val_loss"] - 0.05, (s["base"], s["final"])


def test_cli_trains_and_evaluates_a_classifier_on_real_tweets(smollm2_dir, tmp_path):
    rows = real_tweets()
    train_f = write_jsonl(tmp_path / "train.jsonl", rows[100:400])
    test_f = write_jsonl(tmp_path / "test.jsonl", rows[:40])
    cfg = tiny_config(tmp_path / "run", "smollm2-135m-instruct", train_f, "data.format=classification",
                      "data.max_length=128", "data.val_max=16", "method.r=8", "method.alpha=16", "method.layers=4",
                      "train.steps=4", "train.batch_size=4", "train.lr=1e-3", "train.warmup=1", "train.eval_every=4",
                      "train.save_every=4",
                      "eval.max_examples=40", file=tmp_path / "cfg.yaml", base={},
                      data={"test": str(test_f),
                            "prompt_template": "Is this airline tweet negative, neutral or positive?\n\n{text}"})
    cli = [sys.executable, "-m", "tailorlm"]
    import os
    from pathlib import Path

    import tailorlm

    os.environ["PYTHONPATH"] = str(Path(tailorlm.__file__).parents[1])  # children run this same tailorlm
    r = subprocess.run(cli + ["train", str(cfg), "train.seed=1", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["steps"] == 4 and 0 <= out["final"]["accuracy"] <= 1
    assert out["base"]["predicted"] and sum(out["final"]["predicted"].values()) == 40
    r = subprocess.run(cli + ["eval", str(tmp_path / "run"), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert abs(json.loads(r.stdout)["accuracy"] - out["final"]["accuracy"]) < 1e-9
    r = subprocess.run(cli + ["generate", str(tmp_path / "run"), "--prompt", "Say hi.", "--max-new-tokens", "5"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    # a bad config fails with the key and the fix, exit code 2, before any model loads
    r = subprocess.run(cli + ["train", str(cfg), "train.stpes=3"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "train.stpes: unknown key; did you mean 'train.steps'?" in r.stderr
