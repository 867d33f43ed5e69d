"""Nothing lost: killed runs resume to the same numbers; faults are skipped, detected and named."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tailorlm.config import load_config
from tailorlm.train import checkpoint
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train

from .. import faults
from ..conftest import tiny_config

STEPS = 12


# twelve LoRA steps, two micro-batches each, checkpointed every 4 steps
RESUMABLE = ("data.audit=true", f"train.steps={STEPS}", "train.grad_accum=2", "train.warmup=2",
             "train.eval_every=100", "train.save_every=4", "train.keep_last=5", "retention.reference=auto")


def cli(*args, env=None, **kw):
    import tailorlm  # the child runs the same tailorlm as this test, installed or not

    src = str(Path(tailorlm.__file__).parents[1])
    path = os.pathsep.join([src, str(Path(__file__).parents[2])])   # (and tests.faults, for injected faults)
    return subprocess.Popen([sys.executable, "-m", "tailorlm", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": path, **(env or {})}, **kw)


def wait_for_step(run, step, proc, timeout=120):
    t = time.time()
    while time.time() - t < timeout:
        done = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
        if done and done[-1]["step"] >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise TimeoutError


def per_step(run):
    return {r["step"]: (r["loss"], r["examples"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def final_weights(run):
    return load_file(str(run / "final" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama, tweets_text_file):
    tmp = tmp_path_factory.mktemp("ref")
    train(load_config(tiny_config(tmp / "ref", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp / "ref.yaml")), quiet=True)
    return tmp / "ref"


def assert_same_run(run, reference):
    assert per_step(run) == per_step(reference)            # every loss, and every example id, per step
    ref, got = final_weights(reference), final_weights(run)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_sigkill_mid_step_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_llama, tweets_text_file, reference):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml")
    p = cli("train", str(cfg), "--quiet")
    wait_for_step(tmp_path / "run", 6, p)
    p.kill()
    p.wait()
    r = cli("train", "--resume", str(tmp_path / "run"), "--quiet")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    assert "resumed from step-00000" in err
    assert_same_run(tmp_path / "run", reference)


def test_sigkill_mid_save_leaves_the_previous_checkpoint_and_resumes_exactly(tmp_path, tiny_llama, tweets_text_file,
                                                                             reference):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                      train={"callbacks": ["tests.faults:Faults"]})
    p = cli("train", str(cfg), "--quiet", env={faults.KILL_IN_SAVE: "8"})
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    ck = tmp_path / "run" / "checkpoints"
    assert [d.name for d in ck.glob("step-*")] == ["step-000004"] and list(ck.glob(".step-000008*"))
    assert checkpoint.verify(ck / "step-000004") is None
    r = cli("train", "--resume", str(tmp_path / "run"), "--quiet")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0 and "removed .step-000008" in err and "resumed from step-000004" in err, err[-2000:]
    assert_same_run(tmp_path / "run", reference)


def test_sigterm_saves_a_resumable_checkpoint(tmp_path, tiny_llama, tweets_text_file, reference):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml")
    p = cli("train", str(cfg), "--quiet")
    wait_for_step(tmp_path / "run", 2, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM after step" in err and f"tailorlm train --resume {tmp_path / 'run'}" in err
    last, _ = checkpoint.latest(tmp_path / "run" / "checkpoints")
    stopped_at = int(err.split("after step ")[1].split(";")[0])
    assert last.name == f"step-{stopped_at:06d}" and stopped_at < STEPS
    r = cli("train", "--resume", str(tmp_path / "run"), "--quiet")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    assert_same_run(tmp_path / "run", reference)


def test_a_tampered_or_truncated_checkpoint_is_detected_and_skipped(reference, tmp_path):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(reference / "checkpoints", ck)
    newest = sorted(ck.glob("step-*"))[-1]
    data = (newest / "trainable.safetensors").read_bytes()
    (newest / "trainable.safetensors").write_bytes(data[:-10] + bytes(10))
    second = sorted(ck.glob("step-*"))[-2]
    (second / "optimizer.pt").write_bytes((second / "optimizer.pt").read_bytes()[:100])
    last, notes = checkpoint.latest(ck)
    assert last == sorted(ck.glob("step-*"))[-3]
    assert notes == [f"skipped {newest.name}: trainable.safetensors does not match its hash (truncated or modified)",
                     f"skipped {second.name}: optimizer.pt does not match its hash (truncated or modified)"]


def test_a_nan_step_is_skipped_and_counted_and_too_many_stop_the_run(tmp_path, tiny_llama, tweets_text_file,
                                                                    monkeypatch):
    from tailorlm import forward

    real, calls = forward.LOSSES["causal_lm"], {"n": 0}

    def nan_on_step_5(model, batch):  # 2 micro-batches per step: training calls 9 and 10 are step 5
        calls["n"] += model.training
        s, n = real(model, batch)
        return (s * float("nan"), n) if calls["n"] in (9, 10) else (s, n)

    monkeypatch.setitem(forward.LOSSES, "causal_lm", nan_on_step_5)
    # loss_chunk off: the plain loss path (forward.LOSSES) is the one this test wraps
    s = train(load_config(tiny_config(tmp_path / "nan", tiny_llama, tweets_text_file, *RESUMABLE,
                                      file=tmp_path / "nan.yaml", train={"loss_chunk": None})), quiet=True)
    recs = {r["step"]: r for r in read_metrics(tmp_path / "nan" / "metrics.jsonl") if "loss" in r}
    assert recs[5].get("skipped") and not any(recs[k].get("skipped") for k in recs if k != 5)
    assert s["skipped_steps"] == 1 and all(torch.isfinite(v).all() for v in final_weights(tmp_path / "nan").values())

    monkeypatch.setitem(forward.LOSSES, "causal_lm", lambda m, b: (real(m, b)[0] * float("inf"), b.n_targets))
    with pytest.raises(FloatingPointError, match="3 steps in a row had a non-finite loss.*stopped"):
        train(load_config(tiny_config(tmp_path / "inf", tiny_llama, tweets_text_file, *RESUMABLE,
                                      file=tmp_path / "inf.yaml", train={"loss_chunk": None})), quiet=True)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, tiny_llama, tweets_text_file, monkeypatch):
    import errno

    real = checkpoint.save_file

    def full_at_step_8(tensors, path):
        if "step-000008" in str(path) or ".step-000008" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", full_at_step_8)
    train(load_config(tiny_config(tmp_path / "full", tiny_llama, tweets_text_file, *RESUMABLE,
                                  file=tmp_path / "full.yaml")), quiet=True)
    ck = tmp_path / "full" / "checkpoints"
    assert sorted(d.name for d in ck.iterdir() if d.name != "best") == ["step-000004", "step-000012"]  # no debris
    assert checkpoint.verify(ck / "step-000004") is None
    errs = [r for r in read_metrics(tmp_path / "full" / "metrics.jsonl") if "checkpoint_error" in r]
    assert errs[0]["step"] == 8 and "No space left" in errs[0]["checkpoint_error"]


def test_rotation_never_deletes_the_last_verified_checkpoint(tmp_path):
    root = tmp_path / "ck"
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    for step in (1, 2, 3):
        checkpoint.save(root / f"step-{step:06d}", params={"w": torch.ones(2)}, optimizer=opt, state={"step": step})
    (root / "step-000003" / "manifest.json").unlink()          # the newest is incomplete
    checkpoint.rotate(root, keep_last=1)
    assert sorted(d.name for d in root.iterdir()) == ["step-000002", "step-000003"]


def test_a_manifest_cannot_point_outside_its_checkpoint(tmp_path):
    root = tmp_path / "ck"
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    d = checkpoint.save(root / "step-000001", params={"w": torch.ones(2)}, optimizer=opt, state={"step": 1})
    (tmp_path / "secret.txt").write_text("x")
    m = json.loads((d / "manifest.json").read_text())
    m["../../secret.txt"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(m))
    assert checkpoint.verify(d) == "manifest names a path outside the checkpoint: '../../secret.txt'"


class _Crash(Exception):
    pass


@pytest.mark.parametrize("method", ["full", "lora", "bottleneck", "prompt", "prefix", "ia3"])
def test_every_method_resumes_to_the_same_losses_and_weights(tmp_path, tiny_llama, tweets_text_file, method,
                                                             monkeypatch):
    """A run that dies after step 6 (checkpoint at 4) and resumes equals an uninterrupted run."""
    from tailorlm import forward
    from tailorlm.methods import trainable
    from tailorlm.run import load_run

    def cfg(name):
        c = load_config(tiny_config(tmp_path / name, tiny_llama, tweets_text_file, *RESUMABLE,
                                    file=tmp_path / f"{name}.yaml"))
        c.method = load_config(raw={"data": {"train": "x"}, "method": {"name": method}}).method
        c.train.steps, c.retention.reference, c.retention.budget = 8, None, None   # (no probe: no budget)
        c.train.loss_chunk = None   # the plain loss path (forward.LOSSES), which this test wraps
        return c

    train(cfg("ref"), quiet=True)
    real = forward.LOSSES["causal_lm"]
    calls = {"n": 0}

    def dies_in_step_7(model, batch):
        calls["n"] += model.training
        if calls["n"] > 12:  # 2 micro-batches per step
            raise _Crash()
        return real(model, batch)

    monkeypatch.setitem(forward.LOSSES, "causal_lm", dies_in_step_7)
    with pytest.raises(_Crash):
        train(cfg("run"), quiet=True)
    monkeypatch.setitem(forward.LOSSES, "causal_lm", real)
    train(cfg("run"), resume=True, quiet=True)
    assert per_step(tmp_path / "run") == per_step(tmp_path / "ref")
    a, b = load_run(tmp_path / "ref")[1], load_run(tmp_path / "run")[1]
    wa, wb = dict(a.named_parameters()), dict(b.named_parameters())
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
