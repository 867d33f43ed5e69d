"""`tailorlm plan` and the pre-flight memory check (issue 15, part 3), on tiny random Llamas: the
trainable parameters it counts are the applied methods' own, the activations it extrapolates from
its probe are what autograd really saves on a bigger model, and a run that cannot fit is refused
before its model loads, with an override that the planner itself says fits and that then trains.
The prediction against measured peak memory is tests/plan/test_plan_accuracy.py (slow)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tailorlm.config import ConfigError, load_config
from tailorlm.device import autocast
from tailorlm.forward import lm_loss_sum
from tailorlm.methods import METHODS, count
from tailorlm.models.load import load_model
from tailorlm.plan import human, parse_size, plan
from tailorlm.plan import memory as mem
from tailorlm.plan import shapes
from tailorlm.train import train

from ..conftest import make_tiny_llama, real_tweets, tiny_config, write_jsonl
from ..method_cases import PLAN_CASES
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

REPO = Path(__file__).resolve().parents[2]
METHOD_CASES = PLAN_CASES   # one per method (tests/method_cases.py, shared with the method and export tests)


def test_every_method_is_planned():
    assert sorted(m["name"] for m in METHOD_CASES) == sorted(METHODS)


def test_the_planner_never_asks_which_method_it_plans():
    """plan/ asks the method (its trains_base_weights and footprint), never compares its name (issue 24)."""
    plan_dir = REPO / "src" / "tailorlm" / "plan"
    hits = [f"{f.name}:{i}: {line.strip()}" for f in sorted(plan_dir.glob("*.py"))
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if re.search(r"method\.name\s*(==|!=|\bin\b|\bnot in\b)|\bm\.name\s*(==|!=)", line)]
    assert not hits, hits


@pytest.fixture(scope="module")
def llama4(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A 4-layer tiny Llama (the probe builds 1 and 2 layers: this checks the extrapolation)."""
    return make_tiny_llama(tmp_path_factory.mktemp("llama4"), tiny_tokenizer_dir, num_hidden_layers=4,
                           hidden_size=96, intermediate_size=192, num_attention_heads=6, num_key_value_heads=2)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """Real text in long documents: every training example fills data.max_length."""
    tweets = [r["text"] for r in real_tweets(1200)]
    rows = [{"text": " ".join(tweets[i:i + 30])} for i in range(0, len(tweets), 30)]
    return write_jsonl(tmp_path_factory.mktemp("docs") / "docs.jsonl", rows)


RUN = ("method={name: lora, r: 4}", "data.max_length=64", "data.val_max=4", "train.steps=1", "train.batch_size=8",
       "train.lr=2e-4", "train.threads=1", "train.log_every=10", "train.eval_every=100", "train.save_every=100",
       "eval.before=false", "eval.metrics=[val_loss]", "eval.max_examples=4", "output.overwrite=true")


@pytest.mark.parametrize("method", METHOD_CASES, ids=lambda m: m["name"])
def test_trainable_count_is_the_applied_methods(llama4, docs, tmp_path, method):
    cfg = tiny_config(tmp_path / "run", llama4, docs, *RUN, method=method)
    model, _ = load_model(str(llama4))
    real = count(METHODS[method["name"]].apply(model, cfg.method))
    p = plan(cfg, "64GiB")
    assert (p.trainable, p.total_params) == real
    assert 0 < p.trainable <= p.total_params


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", METHOD_CASES, ids=lambda m: m["name"])
def test_activations_extrapolate_to_the_real_model(llama4, docs, tmp_path, method, precision):
    """The probe (1-2 layers, 256-512 words, one row of 32-128 tokens) predicts, for 4 layers, 400
    words and 3 rows of 80 tokens, the bytes autograd saves in a real forward, to the byte (up to
    the tiny remainder of the 3-point fit)."""
    cfg = tiny_config(tmp_path / "run", llama4, docs, *RUN, method=method,
                      train={"batch_size": 3, "precision": precision})
    cfg.data.max_length = 80 - (method.get("virtual_tokens", 0))
    hf = shapes.hf_config(cfg)
    s = mem.shape_of(cfg, hf)
    pr = shapes.probe(cfg, hf, precision)
    (c, a, q), (cr, ar, qr), (cw, aw, qw) = pr["layer"], pr["rest"], pr["word"]
    T, R, V = s.tokens, s.rows, s.vocab
    predicted = s.in_backward * (c + R * (a * T + q * T * T)) + cr + R * (ar * T + qr * T * T) \
        + V * (cw + R * (aw * T + qw * T * T))

    model, _ = load_model(str(llama4))
    model = METHODS[cfg.method.name].apply(model, cfg.method).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    from tailorlm.data.batching import collate
    from tailorlm.data.tokenize import Example

    ids = [[1 + (i * 5 + r) % (V - 1) for i in range(cfg.data.max_length)] for r in range(R)]
    batch = collate([Example(x, list(x), "t", 1, r) for r, x in enumerate(ids)], 0, packing=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast("cpu", precision):
        lm_loss_sum(model, batch)
    actual = sum(seen.values())
    assert actual > 100_000
    assert abs(predicted - actual) <= 0.02 * actual, (predicted, actual)


def test_sizes():
    assert parse_size("16GiB") == 16 * 2 ** 30 and parse_size("512MB") == 512 * 10 ** 6 and parse_size(1000) == 1000
    assert human(1.5 * 2 ** 30) == "1.5 GiB"
    with pytest.raises(ConfigError, match="not a memory size"):
        parse_size("lots")


def test_refused_before_the_model_loads_with_an_override_that_fits(llama4, docs, tmp_path):
    """A limit between what the config needs and what its micro-batch of 1 needs: the run is refused
    with the model's weights gone (so the refusal came before any load), the suggested override fits
    by the planner's own account, and a run with it (weights back) trains."""
    cfg = tiny_config(tmp_path / "run", llama4, docs, *RUN)
    need = plan(cfg, 10 ** 15).needed   # (the peak in use, with the allocator's headroom on CPU)
    one = plan(tiny_config(tmp_path / "run", llama4, docs, *RUN, train={"batch_size": 1, "grad_accum": 8}), 10 ** 15).needed
    assert one < need
    limit = (one + need) // 2
    bare = tmp_path / "bare"
    shutil.copytree(llama4, bare)
    (bare / "model.safetensors").unlink()
    refused = tiny_config(tmp_path / "run", bare, docs, *RUN, train={"memory_limit": str(limit)})
    with pytest.raises(ConfigError) as err:
        train(refused, quiet=True)
    msg = str(err.value)
    assert "exceeds" in msg and "nothing was loaded" in msg and not (tmp_path / "run").exists()
    override = re.search(r"Fix: (.+?) \(needs", msg).group(1).split()
    assert any(o.startswith("train.batch_size=") for o in override)   # the first kind tried
    fixed = load_config(raw=json.loads(tiny_config(tmp_path / "run", llama4, docs, *RUN).model_dump_json()),
                        overrides=override + [f"train.memory_limit={limit}"])
    assert fixed.train.batch_size * fixed.train.grad_accum == 8          # the same examples per step
    assert plan(fixed, limit).fits
    summary = train(fixed, quiet=True)
    assert summary["steps"] == 1


def test_cli_plan_and_no_plan_check(llama4, docs, tmp_path):
    cfg = tiny_config(tmp_path / "run", llama4, docs, *RUN)
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(json.loads(cfg.model_dump_json())))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "tailorlm"]
    ok = subprocess.run(cli + ["plan", str(path), "--memory", "64GiB"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "FITS" in ok.stdout and "activations" in ok.stdout, ok.stderr
    one = plan(tiny_config(tmp_path / "run", llama4, docs, *RUN, train={"batch_size": 1, "grad_accum": 8}), 10 ** 15).needed
    small = (plan(cfg, 10 ** 15).needed + one) // 2
    no = subprocess.run(cli + ["plan", str(path), "--memory", str(small), "--json"], env=env, capture_output=True,
                        text=True)
    out = json.loads(no.stdout)
    assert no.returncode == 1 and out["fits"] is False and out["advice"]
    assert all(a["total"] * out["headroom"] <= small for a in out["advice"])
    refused = subprocess.run(cli + ["train", str(path), f"train.memory_limit={small}"], env=env, capture_output=True,
                             text=True)
    assert refused.returncode == 2 and "exceeds" in refused.stderr
    forced = subprocess.run(cli + ["train", str(path), f"train.memory_limit={small}", "--no-plan-check", "--quiet"],
                            env=env, capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr[-2000:]
