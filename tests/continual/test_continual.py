"""Continual learning on a tiny model and real tweets: the metrics by hand, the replay buffer, earlier
adapters untouched, the O-LoRA penalty, and a plan killed mid-stage that resumes to the same matrix."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tailorlm.continual import load_plan, run_plan
from tailorlm.continual import metrics as cm
from tailorlm.continual.olora import orthogonality
from tailorlm.continual.strategies import Reservoir

from .. import faults
from ..conftest import real_tweets
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

# R: row 0 the base model; rows 1..3 after each stage; columns tasks 1..3
R = [[0.2, 0.3, 0.1],
     [0.8, 0.35, 0.1],
     [0.6, 0.9, 0.2],
     [0.5, 0.7, 0.85]]


def test_metrics_by_hand():
    assert cm.acc(R) == pytest.approx((0.5 + 0.7 + 0.85) / 3)
    assert cm.bwt(R) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert cm.fwt(R) == pytest.approx(((0.35 - 0.3) + (0.2 - 0.1)) / 2)
    # task 1: best of R[1][0], R[2][0] = 0.8 -> 0.8 - 0.5; task 2: R[2][1] = 0.9 -> 0.9 - 0.7
    assert cm.forgetting(R) == pytest.approx(((0.8 - 0.5) + (0.9 - 0.7)) / 2)
    assert cm.learning_accuracy(R) == pytest.approx((0.8 + 0.9 + 0.85) / 3)
    one = [[0.1], [0.7]]
    assert cm.summary(one) == {"ACC": pytest.approx(0.7), "BWT": None, "FWT": None, "F": None,
                               "LA": pytest.approx(0.7)}
    with pytest.raises(ValueError, match="T\\+1 rows"):
        cm.acc([[0.1, 0.2], [0.3]])


def test_forgetting_takes_the_best_earlier_score_not_the_first():
    r = [[0, 0, 0], [0.4, 0, 0], [0.9, 0.5, 0], [0.6, 0.5, 0.5]]
    assert cm.forgetting(r) == pytest.approx(((0.9 - 0.6) + 0) / 2)     # max over l in [1, 2], not R[1][0]


def test_the_reservoir_keeps_its_cap_and_the_proportions(tmp_path):
    buf = Reservoir(100, 0, tmp_path / "b.json")
    buf.add([{"s": 1}] * 300)
    buf.save()
    again = Reservoir(100, 0, tmp_path / "b.json")          # reloaded as a resumed plan does
    again.add([{"s": 2}] * 100)
    assert len(again.items) == 100 and again.seen == 400
    share = sum(r["s"] == 1 for r in again.items) / 100
    assert 0.6 <= share <= 0.9                                # uniform over all 400: 0.75 expected
    fresh = Reservoir(100, 0, tmp_path / "c.json")            # the same seed and stream: the same sample
    fresh.add([{"s": 1}] * 300)
    fresh.add([{"s": 2}] * 100)
    assert fresh.items == again.items


def test_orthogonality_is_the_papers_sum_of_absolute_overlaps():
    """O-LoRA (Wang et al. 2023; cmnfriend/O-LoRA uie_trainer_lora.py): sum over earlier tasks j of
    sum_{k,l} |(A_j A_new^T)_{kl}|, by hand; zero exactly for orthogonal subspaces, and not scale-free."""
    g = torch.Generator().manual_seed(0)
    a_new, a1, a2 = (torch.randn(r, 6, generator=g) for r in (2, 3, 2))
    want = 0.0
    for a_old in (a1, a2):
        for k in range(a_old.shape[0]):
            for l in range(a_new.shape[0]):
                want += abs(sum(float(a_old[k, d]) * float(a_new[l, d]) for d in range(6)))
    assert float(orthogonality(a_new, [a1, a2])) == pytest.approx(want, rel=1e-5)
    assert float(orthogonality(a_new, [3 * a1, 3 * a2])) == pytest.approx(3 * want, rel=1e-5)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert float(orthogonality(q[:4], [q[4:8], q[8:10]])) == pytest.approx(0.0, abs=1e-5)


def test_the_olora_penalty_on_a_peft_model_equals_the_official_formula_by_hand(tiny_llama):
    """lambda1 * sum over layers and earlier adapters of sum |A_old A_new^T| + lambda2 * sum over the new
    adapter's tensors of ||W||_2 (the official code's l2_loss: Frobenius norm, not squared), on a real
    PEFT model with two adapters, recomputed from its named parameters."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tailorlm.continual.olora import Orthogonal

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]), adapter_name="s1")
    model.add_adapter("s2", LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn_like(p))          # B starts at zero: give every tensor a value
    cb = Orthogonal("s2", 0.5, 0.1)
    run = SimpleNamespace(model=model)
    cb.on_start(run)
    params = {n: p.detach() for n, p in model.named_parameters()}
    orth, l2, layers = 0.0, 0.0, 0
    for n, p in params.items():
        if n.endswith("lora_A.s2.weight"):
            layers += 1
            old = params[n.replace("lora_A.s2.", "lora_A.s1.")]
            orth += float((old @ p.T).abs().sum())
        if ".s2." in n and "lora_" in n:
            l2 += float(p.pow(2).sum().sqrt())
    assert layers == 4                                # 2 layers x (q, v)
    got = cb.extra_loss(run)
    assert float(got) == pytest.approx(0.5 * orth + 0.1 * l2, rel=1e-5)
    plain = Orthogonal("s2", 0.5, 0.0)                # lambda2 0 (the official default): the overlap alone
    plain.on_start(run)
    assert float(plain.extra_loss(run)) == pytest.approx(0.5 * orth, rel=1e-5)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def stage_files(tmp_path_factory):
    rows = real_tweets()
    random.Random(0).shuffle(rows)
    d = tmp_path_factory.mktemp("stages")
    a = _write(d / "sentiment.jsonl", [{"text": r["text"], "label": r["label"]} for r in rows[:100]])
    b = _write(d / "exclaims.jsonl", [{"text": r["text"], "label": "yes" if "!" in r["text"] else "no"}
                                      for r in rows[100:200]])
    c = _write(d / "mentions.jsonl", [{"text": r["text"], "label": "two" if r["text"].count("@") > 1 else "one"}
                                      for r in rows[200:300]])
    return [a, b, c]


def plan_raw(tiny_llama, files, out, strategy, **base_over):
    base = {"model": str(tiny_llama), "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-2, "precision": "fp32", "eval_every": 4, "save_every": 2,
                      "log_every": 1},
            "eval": {"max_examples": 16}, "retention": {"samples": 4, "sample_tokens": 16}, **base_over}
    names = ["sentiment", "exclaims", "mentions"][: len(files)]
    return {"base": base, "stages": [{"name": n, "train": str(f)} for n, f in zip(names, files)],
            "strategy": strategy, "output": {"dir": str(out)}}


@pytest.mark.parametrize("name", ["olora", "adapter_per_task"])
def test_earlier_adapters_stay_bit_identical_after_later_stages(tiny_llama, stage_files, tmp_path, name):
    out = run_plan(load_plan(raw=plan_raw(tiny_llama, stage_files, tmp_path / "p", {"name": name})), quiet=True,
                   say=lambda *_: None)
    order = tmp_path / "p" / "order-0"
    if name == "olora":
        first = load_file(str(order / "adapters" / "1" / "adapter_model.safetensors"))
        # the last stage's final/ holds every adapter; s1 in it equals stage 1's own
        last = load_file(str(order / "03-mentions" / "final" / "s1" / "adapter_model.safetensors"))
    else:
        first = load_file(str(order / "01-sentiment" / "final" / "adapter_model.safetensors"))
        last = first    # a separate run; check it was not rewritten by the later ones
        assert (order / "01-sentiment" / "final").stat().st_mtime < (order / "03-mentions" / "final").stat().st_mtime
    assert first and first.keys() == last.keys() and all(torch.equal(first[k], last[k]) for k in first)
    R_ = out["orders"][0]["R"]
    assert len(R_) == 4 and all(len(r) == 3 for r in R_)
    if name == "adapter_per_task":
        assert "task's identity" in out["note"]
        assert R_[1][2] == R_[0][2]          # a task not yet learnt is scored with the base model


def test_a_plan_killed_mid_stage_two_resumes_to_the_same_matrix(tiny_llama, stage_files, tmp_path):
    strategy = {"name": "ewc", "weight": 10.0}
    files = stage_files[:2]
    ref = run_plan(load_plan(raw=plan_raw(tiny_llama, files, tmp_path / "ref", strategy)), quiet=True,
                   say=lambda *_: None)
    raw = plan_raw(tiny_llama, files, tmp_path / "run", strategy)
    raw["base"]["train"]["callbacks"] = ["tests.faults:Faults"]
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(raw))
    import tailorlm

    path = os.pathsep.join([str(Path(tailorlm.__file__).parents[1]), str(Path(__file__).parents[2])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tailorlm", "continual", str(plan), "--quiet"]
    p = subprocess.run(cmd, env={**env, faults.KILL_AT: "02-exclaims:3"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == -9, p.stderr[-2000:]
    stage2 = tmp_path / "run" / "order-0" / "02-exclaims"
    assert (stage2 / "checkpoints" / "step-000002").is_dir() and not (stage2 / "final").exists()
    assert len(json.loads((tmp_path / "run" / "order-0" / "matrix.json").read_text())["R"]) == 2   # base, stage 1
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads((tmp_path / "run" / "continual.json").read_text())
    assert got["orders"][0]["R"] == ref["orders"][0]["R"]
    assert got["orders"][0]["probe"] == ref["orders"][0]["probe"]
    assert "| ewc |" in p.stdout


def test_a_plan_needs_unique_stage_names(tiny_llama, stage_files, tmp_path):
    from tailorlm.errors import ConfigError

    raw = plan_raw(tiny_llama, stage_files[:2], tmp_path / "p", {"name": "naive"})
    raw["stages"][1]["name"] = raw["stages"][0]["name"]
    with pytest.raises(ConfigError, match="unique name"):
        load_plan(raw=raw)


def test_references_orders_and_the_report(tiny_llama, stage_files, tmp_path):
    raw = plan_raw(tiny_llama, stage_files[:2], tmp_path / "p", {"name": "naive"})
    raw.update(orders=2, references={"joint": True, "single": True})
    out = run_plan(load_plan(raw=raw), quiet=True, say=lambda *_: None)
    a, b = out["orders"]
    assert a["order"] != b["order"] and sorted(a["order"]) == sorted(b["order"])      # a second, shuffled order
    for k in ("ACC", "F", "LA"):
        assert out["mean"][k] == pytest.approx((a[k] + b[k]) / 2)
        assert out["spread"][k] == pytest.approx(abs(a[k] - b[k]) / 2)
    assert set(out["references"]["joint"]) == {"sentiment", "exclaims"}
    assert set(out["references"]["single"]) == {"sentiment", "exclaims"}
    page = (tmp_path / "p" / "continual.html").read_text()
    assert f"{a['R'][1][0]:.3f}" in page and "<svg" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
