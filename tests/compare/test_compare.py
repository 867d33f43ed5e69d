"""`tailorlm compare` on a tiny model and real tweets: the grid, every run an ordinary run, the measured
costs against the files themselves, mean and spread over seeds, a compare killed mid-run that resumes
without retraining what finished, and the page opened in a browser."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tailorlm.compare import expand
from tailorlm.compare import table
from tailorlm.config import load_config
from tailorlm.errors import ConfigError

from .. import faults
from ..conftest import tiny_config, write_jsonl
from ..tiny_models import mixed_tweets, one_thread  # noqa: F401  (autouse: one thread per test)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture
def cfg_file(tiny_llama, tmp_path) -> Path:
    data = write_jsonl(tmp_path / "tweets.jsonl", mixed_tweets(200))
    return tiny_config(None, tiny_llama, data, "data.format=classification", "data.max_length=96", "data.val_max=24",
                       "train.steps=3", "train.threads=1", "train.eval_every=3", "train.save_every=1",
                       "eval.max_examples=16", "eval.batch_size=8", "eval.fewshot=2", "retention.reference=auto",
                       "retention.samples=4", "retention.sample_tokens=12", file=tmp_path / "tiny.yaml")


def test_the_grid_crosses_methods_seeds_and_sizes_on_the_same_data(cfg_file, tmp_path):
    root = tmp_path / "cmp"
    runs = expand([str(cfg_file)], root, methods=["lora", "prompt"], seeds=2, sizes=[16, 40],
                  overrides=["prompt:train.lr=3e-2", "train.steps=5"])
    assert [r.name for r in runs] == [f"{m}-n{n}-s{k}" for k in (0, 1) for n in (16, 40) for m in ("lora", "prompt")]
    cfgs = {r.name: load_config(r.config, list(r.overrides)) for r in runs}
    for k in (0, 1):
        for n in (16, 40):
            lora, prompt = cfgs[f"lora-n{n}-s{k}"], cfgs[f"prompt-n{n}-s{k}"]
            assert lora.method.name == "lora" and lora.method.r == 4 and prompt.method.name == "prompt"
            assert lora.train.seed == prompt.train.seed == k               # same data order across methods
            assert lora.data.train == prompt.data.train and lora.data.val == prompt.data.val
            assert (lora.train.lr, prompt.train.lr) == (1e-2, 3e-2)        # METHOD:key=value: that method only
            assert lora.train.steps == prompt.train.steps == 5
            assert lora.data.labels == ["negative", "neutral", "positive"]   # pinned from the whole pool
    small, large = (Path(cfgs[f"lora-n{n}-s0"].data.train).read_text().splitlines() for n in (16, 40))
    assert len(small) == 16 and len(large) == 40 and large[:16] == small          # smaller sets: prefixes
    held = set(Path(cfgs["lora-n16-s0"].data.val).read_text().splitlines())
    assert len(held) == 20 and not held & set(large)                             # 10% of 200, never trained on
    assert cfgs["lora-n16-s1"].data.train == cfgs["lora-n16-s0"].data.train   # seeds vary init and order, not rows


def test_a_grid_with_different_token_budgets_is_refused(cfg_file, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(cfg_file.read_text().replace("batch_size: 4", "batch_size: 2").replace("fewshot: 2", "fewshot: 0"))
    with pytest.raises(ConfigError, match="same token budget.*batch_size"):
        expand([str(cfg_file), str(other)], tmp_path / "cmp")
    runs = expand([str(cfg_file), str(other)], tmp_path / "cmp", overrides=["train.batch_size=4"], fewshot=4)
    assert [r.name for r in runs] == ["tiny-s0", "other-s0"]
    # the few-shot baseline where a config has none; a config's own k kept
    assert [load_config(r.config, list(r.overrides)).eval.fewshot for r in runs] == [2, 4]


def test_spread_flags_and_pareto_by_hand():
    a, b, c = table.stats([0.80, 0.84]), table.stats([0.83, 0.87]), table.stats([0.60, 0.61])
    assert a["mean"] == pytest.approx(0.82) and a["sd"] == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert table.within_spread(a, b) is True          # 0.03 apart: more than one sd (0.028), less than two
    assert table.within_spread(a, c) is False         # 0.215 apart
    assert table.within_spread(table.stats([0.8]), b) is None      # one seed: no spread to compare with
    assert table.within_spread(table.stats([0.69, 0.69]), table.stats([0.69, 0.69])) is True   # nothing between
    assert table.pareto([("full", 0.30, 0.20), ("lora", 0.05, 0.18), ("prompt", 0.40, 0.05),
                         ("ia3", 0.01, 0.10)]) == {"full", "lora", "ia3"}
    row = table.run_row({"base": {"val_loss": 2.0, "accuracy": 0.5, "fewshot2_accuracy": 0.6},
                         "final": {"val_loss": 1.5, "accuracy": 0.7, "ref_nll_change": 0.1}}, "val_loss")
    assert row["gain"] == pytest.approx(0.5) and row["gain_fewshot"] is None   # a loss: base - tuned


def _compare(cfg_file: Path, out: Path, **env_extra) -> subprocess.CompletedProcess:
    import tailorlm

    path = os.pathsep.join([str(Path(tailorlm.__file__).parents[1]), str(Path(__file__).parents[2])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **env_extra}
    cmd = [sys.executable, "-m", "tailorlm", "compare", str(cfg_file), "--methods", "lora,bottleneck", "--seeds", "2",
           "--out", str(out), 'train.callbacks=["tests.faults:Faults"]']
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=out.parent)


def test_a_killed_compare_resumes_and_measures_every_run(cfg_file, tmp_path):
    out = tmp_path / "cmp"
    p = _compare(cfg_file, out, **{faults.KILL_AT: "bottleneck-s0:2"})    # the second run dies after step 2
    # (checkpointed after step 1: save_every 1, and the kill comes before step 2 is saved)
    assert p.returncode == 1 and "run bottleneck-s0 failed" in p.stderr, p.stderr[-2000:]
    first, second = out / "runs" / "lora-s0", out / "runs" / "bottleneck-s0"
    assert (second / "checkpoints" / "step-000001").is_dir() and not (second / "final").exists()
    assert not (out / "runs" / "lora-s1").exists()
    stamp = {f: f.stat().st_mtime_ns for f in [first / "summary.json", *(first / "final").iterdir()]}

    p = _compare(cfg_file, out)
    assert p.returncode == 0, p.stderr[-2000:]
    assert {f: f.stat().st_mtime_ns for f in stamp} == stamp                     # the finished run: untouched
    assert (out / "logs" / "lora-s0.log").read_text().count("$ ") == 1           # ...and trained once
    assert "--resume" in (out / "logs" / "bottleneck-s0.log").read_text().split("$ ")[-1]
    assert "resumed from step-000001" in (out / "logs" / "bottleneck-s0.log").read_text()
    got = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in got["runs"]] == ["lora-s0", "bottleneck-s0", "lora-s1", "bottleneck-s1"]
    for r in got["runs"]:
        run = out / r["dir"]
        own = {"config.yaml", "metrics.jsonl", "summary.json", "final", "base_eval.json"}
        assert own <= {x.name for x in run.iterdir()}                      # an ordinary run directory
        summary = json.loads((run / "summary.json").read_text())
        assert r["trainable_params"] == summary["trainable_params"] > 0    # rebuilt from final/ = counted in training
        assert r["artifact_bytes"] == sum(f.stat().st_size for f in (run / "final").glob("*.safetensors")) > 0
        final, base = summary["final"], summary["base"]                   # (auto: macro-F1 for classification)
        assert r["metric"] == "macro_f1" and (r["tuned"], r["base"]) == (final["macro_f1"], base["macro_f1"])
        assert r["gain"] == pytest.approx(final["macro_f1"] - base["macro_f1"])
        assert r["gain_fewshot"] == pytest.approx(final["macro_f1"] - base["fewshot2_macro_f1"])
        assert r["ref_nll_change"] == summary["final"]["ref_nll_change"]
        assert r["peak_rss_bytes"] > 50e6 and r["latency_ms"] > 0          # (a Python with torch: > 50 MB)
        assert (r["latency_merged_ms"] is None) == (r["method"] == "bottleneck")    # adapters cannot merge
    assert got["runs"][1]["attempts"] == 2 and got["runs"][0]["attempts"] == 1
    groups = {g["label"]: g for g in got["groups"]}
    for label in ("lora", "bottleneck"):
        gains = [r["gain"] for r in got["runs"] if r["label"] == label]
        assert groups[label]["gain"]["mean"] == pytest.approx(statistics.fmean(gains))
        assert groups[label]["gain"]["sd"] == pytest.approx(statistics.stdev(gains))
    for pair in got["pairs"]:
        a, b = groups[pair["a"]][pair["field"]], groups[pair["b"]][pair["field"]]
        assert pair["within_spread"] == (abs(a["mean"] - b["mean"]) <= a["sd"] + b["sd"])
    html = (out / "compare.html").read_text()
    assert html.count('data-chart="gain against') == 5 and "Pareto" in html and 'href="runs/lora-s1' in html
    assert "| lora |" in p.stdout and "| bottleneck |" in p.stdout
    if CHROMIUM:
        shot = tmp_path / "compare.png"
        b = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                            "--window-size=1280,2000", (out / "compare.html").as_uri()],
                           capture_output=True, text=True, timeout=120)
        assert shot.is_file() and shot.stat().st_size > 20_000, b.stderr[-1000:]
        assert ":CONSOLE" not in b.stderr
