"""End to end on the real SmolLM2-135M-Instruct and real text (slow; CI runs these too)."""
import json
import subprocess
import sys

import pytest

from tailorlm.config import load_config
from tailorlm.train.loop import train

from .conftest import real_tweets, write_jsonl

pytestmark = pytest.mark.slow


def test_short_lora_run_on_real_text_lowers_validation_loss(smollm2_dir, tweets_text_file, tmp_path):
    cfg = load_config(raw={
        "model": "smollm2-135m-instruct",
        "data": {"train": str(tweets_text_file), "format": "text", "max_length": 64, "val_max": 24},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "train": {"steps": 12, "batch_size": 8, "lr": 1e-3, "warmup": 2, "eval_every": 12, "save_every": 12},
        "eval": {"max_examples": 24}, "output": {"dir": str(tmp_path / "run")}})
    s = train(cfg, quiet=True)
    assert s["final"]["val_loss"] < s["base"]["val_loss"] - 0.05, (s["base"], s["final"])


def test_cli_trains_and_evaluates_a_classifier_on_real_tweets(smollm2_dir, tmp_path):
    rows = real_tweets()
    train_f = write_jsonl(tmp_path / "train.jsonl", rows[100:400])
    test_f = write_jsonl(tmp_path / "test.jsonl", rows[:40])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"""
model: smollm2-135m-instruct
data: {{train: {train_f}, test: {test_f}, format: classification, max_length: 128, val_max: 16,
        prompt_template: "Is this airline tweet negative, neutral or positive?\\n\\n{{text}}"}}
method: {{name: lora, r: 8, alpha: 16, layers: 4}}
train: {{steps: 4, batch_size: 4, lr: 1.0e-3, warmup: 1, eval_every: 4, save_every: 4}}
eval: {{max_examples: 40}}
output: {{dir: {tmp_path / 'run'}}}
""")
    cli = [sys.executable, "-m", "tailorlm"]
    import os
    from pathlib import Path

    import tailorlm

    os.environ["PYTHONPATH"] = str(Path(tailorlm.__file__).parents[1])  # children run this same tailorlm
    r = subprocess.run(cli + ["train", str(cfg), "train.seed=1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["steps"] == 4 and 0 <= out["final"]["accuracy"] <= 1
    assert out["base"]["predicted"] and sum(out["final"]["predicted"].values()) == 40
    r = subprocess.run(cli + ["eval", str(tmp_path / "run")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert abs(json.loads(r.stdout)["accuracy"] - out["final"]["accuracy"]) < 1e-9
    r = subprocess.run(cli + ["generate", str(tmp_path / "run"), "--prompt", "Say hi.", "--max-new-tokens", "5"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-3000:]
    # a bad config fails with the key and the fix, exit code 2, before any model loads
    r = subprocess.run(cli + ["train", str(cfg), "train.stpes=3"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "train.stpes: unknown key; did you mean 'train.steps'?" in r.stderr
