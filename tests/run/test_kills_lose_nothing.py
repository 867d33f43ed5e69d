"""Nothing lost (issue 13): whatever moment a run is killed or the disk fills, it resumes to the
numbers of an uninterrupted run, and says what it found.

Each test reproduces what the issue saw: a SIGKILL in the middle of a rewrite, a flipped byte in
checkpoints/best, a full disk inside torch.save and while writing final/, a resume with nothing to
resume, debris left by kills, a pickle payload in a checkpoint, a signal during start-up. Kills are
real (SIGKILL / SIGTERM to a `tailorlm` process at an exact point, injected by tests/faults.py) and
every resumed run must end bit-identical to an uninterrupted one (test_resume's reference run).
Nothing foreign touched: tests/run/test_only_own_files_touched.py.
"""
from __future__ import annotations

import errno
import itertools
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tailorlm.run import load_run
from tailorlm.commands import main
from tailorlm.config import load_config
from tailorlm.train import Callback, checkpoint
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train

from .. import faults
from ..conftest import tiny_config
from ..train.test_resume import RESUMABLE, assert_same_run, cli, per_step, reference  # noqa: F401  (reference: fixture)
from ..tiny_models import one_thread  # noqa: F401  (fixture, used where no run is compared bit for bit)

FAULTS = ["tests.faults:Faults"]


# the cheapest run that writes everything: two LoRA steps on text, audited, scored by val_loss
WRITES_ALL = ("data.audit=true", "eval.metrics=[val_loss]")


def flip_last_byte(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("tailorlm ")]


class CrashBefore(Callback):
    """An in-process crash before step `n` (the checkpoints before it are on disk)."""

    def __init__(self, n: int):
        self.n = n

    def on_step_start(self, run) -> None:
        if run.step + 1 == self.n:
            raise _Crash()


class _Crash(Exception):
    pass


# ------------------------------------------------------------------ 3. a kill during a rewrite


def test_a_kill_while_rewriting_config_or_metrics_loses_nothing(tmp_path, tiny_llama, tweets_text_file, reference):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                      train={"callbacks": FAULTS})
    run = tmp_path / "run"
    p = cli("train", str(cfg), "--quiet", env={faults.KILL_IN_SAVE: "8"})
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    logged = per_step(run)
    for name in ("config.yaml", "metrics.jsonl"):      # killed as each is rewritten on resume
        r = cli("train", "--resume", str(run), "--quiet", env={faults.KILL_AT_WRITE: name})
        _, err = r.communicate(timeout=300)
        assert r.returncode == -signal.SIGKILL, err[-2000:]
        assert load_config(run / "config.yaml").output.dir == str(run)
        assert per_step(run) == logged
    r = cli("train", "--resume", str(run), "--quiet")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0 and "resumed from step-000004" in err, err[-2000:]
    assert_same_run(run, reference)


@pytest.mark.usefixtures("one_thread")
def test_every_file_tailorlm_rewrites_goes_through_a_renamed_temporary(tmp_path, tiny_llama, tweets_text_file,
                                                                        monkeypatch):
    """No write ever opens a run's file in place (appends to metrics.jsonl aside): config.yaml,
    audit.json, base_eval.json, summary.json, the metrics repair, final/ and checkpoints are all
    written under a hidden temporary name and renamed."""
    import builtins
    import io
    import os

    run, in_place = tmp_path / "run", []
    real = io.open

    def opener(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and ("w" in mode or "x" in mode):
            p = Path(os.path.abspath(file))
            if p.is_relative_to(run) and not any(part.startswith(".") for part in p.relative_to(run).parts):
                in_place.append(str(p.relative_to(run)))
        return real(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", opener)
    monkeypatch.setattr(io, "open", opener)
    cfg = load_config(tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml"))
    train(cfg, quiet=True)
    train(load_config(run / "config.yaml"), resume=True, quiet=True)
    assert (run / "audit.json").is_file() and (run / "base_eval.json").is_file()
    assert in_place == []


# ------------------------------------------------------------------ 4. the best checkpoint is verified


@pytest.mark.usefixtures("one_thread")
def test_a_corrupt_best_checkpoint_never_becomes_final(tmp_path, tiny_llama, tweets_text_file, monkeypatch, capsys):
    from tailorlm.eval.evaluators import EVALUATORS

    calls = itertools.count()
    monkeypatch.setitem(EVALUATORS, "worsening", lambda model, ctx: {"val_loss": float(next(calls))})

    class FlipBest(Callback):
        def on_train_end(self, run) -> None:
            flip_last_byte(run.run_dir / "checkpoints" / "best" / "trainable.safetensors")

    run = tmp_path / "run"
    cfg = load_config(tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                                  eval={"metrics": ["val_loss", "worsening"]}, train={"steps": 6, "keep_last": 5}))
    s = train(cfg, quiet=True, callbacks=[FlipBest()])    # best: step 2 (the first evaluation), then worse
    err = capsys.readouterr().err
    assert "checkpoints/best (step 2) cannot be used" in err and "final/ holds the last step (6)" in err
    assert s["best_step"] is None
    assert any("best_error" in r for r in read_metrics(run / "metrics.jsonl"))
    last = load_file(str(run / "checkpoints" / "step-000006" / "trainable.safetensors"))
    final = dict(load_run(run)[1].named_parameters())
    assert all(torch.equal(final[k], v) for k, v in last.items())


# ------------------------------------------------------------------ 5. a full disk


@pytest.mark.usefixtures("one_thread")
def test_a_full_disk_inside_torch_save_keeps_the_run_training(tmp_path, tiny_llama, tweets_text_file, monkeypatch,
                                                              capsys):
    real = torch.save

    def full_at_step_4(obj, f, *a, **k):   # what torch.save raises on ENOSPC: a RuntimeError
        if ".step-000004." in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_at_step_4)
    run = tmp_path / "run"
    train(load_config(tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                                  train={"steps": 6, "keep_last": 5})), quiet=True)
    assert "checkpoint at step 4 failed" in capsys.readouterr().err
    ck = run / "checkpoints"
    assert sorted(d.name for d in ck.iterdir()) == ["best", "step-000002", "step-000006"]
    assert (run / "final" / "adapter_config.json").is_file()


def test_a_full_disk_while_writing_final_leaves_the_last_checkpoint_and_one_line(tmp_path, tiny_llama,
                                                                                 tweets_text_file, reference,
                                                                                 monkeypatch, capsys):
    from transformers import PreTrainedTokenizerBase

    real = PreTrainedTokenizerBase.save_pretrained

    def full(self, out, *a, **k):   # the disk fills while tokenizer.json is written
        real(self, out, *a, **k)
        tj = Path(out) / "tokenizer.json"
        tj.write_bytes(tj.read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device", str(tj))

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", full)
    run = tmp_path / "run"
    assert main(["train", str(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE,
                                          file=tmp_path / "run.yaml")), "--quiet"]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and "No space left" in lines[0] and "step-000012" in lines[0], lines
    assert f"tailorlm train --resume {run}" in lines[0]
    assert not (run / "final").exists() and not list(run.glob(".final*"))
    assert checkpoint.verify(run / "checkpoints" / "step-000012") is None
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(run, reference)


# ------------------------------------------------------------------ 6. nothing to resume


def test_resume_after_a_kill_during_start_up_says_so_and_starts_clean(tmp_path, tiny_llama, tweets_text_file,
                                                                      reference):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                      train={"callbacks": FAULTS})
    run = tmp_path / "run"
    p = cli("train", str(cfg), "--quiet", env={faults.SIGNAL_IN_SETUP: "KILL"})
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL and not (run / "base_eval.json").exists()
    r = cli("train", "--resume", str(run), "--quiet")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    assert "nothing could be resumed" in err and "starting a clean run" in err
    s = json.loads((run / "summary.json").read_text())
    assert s["base"] and "ref_nll" in s["base"] and "val_loss" in s["delta"]
    assert_same_run(run, reference)


def test_resume_when_every_checkpoint_is_corrupt_starts_clean_without_duplicate_steps(tmp_path, tiny_llama,
                                                                                      tweets_text_file, reference,
                                                                                      capsys):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml")
    run = tmp_path / "run"
    with pytest.raises(_Crash):
        train(load_config(cfg), quiet=True, callbacks=[CrashBefore(7)])
    flip_last_byte(run / "checkpoints" / "step-000004" / "trainable.safetensors")
    train(load_config(cfg), resume=True, quiet=True)
    assert "nothing could be resumed" in capsys.readouterr().err
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 13))
    assert json.loads((run / "summary.json").read_text())["base"]
    assert_same_run(run, reference)


# ------------------------------------------------------------------ 7. debris


def test_debris_of_killed_saves_and_rotations_is_removed_on_resume(tmp_path, tiny_llama, tweets_text_file, reference):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                      train={"callbacks": FAULTS})
    run, ck = tmp_path / "run", tmp_path / "run" / "checkpoints"
    p = cli("train", str(cfg), "--quiet", env={faults.KILL_IN_SAVE: "best"})   # (the best is saved at step 12)
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL and list(ck.glob(".best.*"))
    shutil.copytree(ck / "step-000004", ck / "step-000002")     # a rotation killed halfway through a delete
    (ck / "step-000002" / "trainable.safetensors").unlink()
    flip_last_byte(ck / "step-000008" / "trainable.safetensors")    # and a corrupt one
    r = cli("train", "--resume", str(run), "--quiet")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0 and "resumed from step-000004" in err, err[-2000:]
    assert "removed step-000008" in err and "removed step-000002" in err
    assert sorted(d.name for d in ck.iterdir()) == ["best", "step-000004", "step-000008", "step-000012"]
    assert all(checkpoint.verify(d) is None for d in ck.iterdir())
    assert_same_run(run, reference)


# ------------------------------------------------------------------ 10. user errors without tracebacks


def test_a_pickle_payload_in_optimizer_state_falls_back_to_the_previous_checkpoint(tmp_path, tiny_llama,
                                                                                   tweets_text_file, reference,
                                                                                   capsys):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml")
    run, pwned = tmp_path / "run", tmp_path / "pwned"
    with pytest.raises(_Crash):
        train(load_config(cfg), quiet=True, callbacks=[CrashBefore(11)])
    step8 = run / "checkpoints" / "step-000008"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(pwned)!r}, 'w').write('x')",)

    torch.save({"state": {0: Payload()}, "param_groups": []}, step8 / "optimizer.pt")
    manifest = json.loads((step8 / "manifest.json").read_text())
    manifest["optimizer.pt"] = checkpoint._sha256(step8 / "optimizer.pt")       # hashes that verify
    (step8 / "manifest.json").write_text(json.dumps(manifest))
    assert checkpoint.verify(step8) is None
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "step-000008: optimizer.pt cannot be loaded safely" in err and "resumed from step-000004" in err
    assert not pwned.exists()
    assert_same_run(run, reference)


def test_sigterm_during_start_up_says_so_and_the_same_command_runs_again(tmp_path, tiny_llama, tweets_text_file):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                      train={"callbacks": FAULTS})
    p = cli("train", str(cfg), "--quiet", env={faults.SIGNAL_IN_SETUP: "TERM"})
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM during start-up" in err and "nothing was lost" in err
    r = cli("train", str(cfg), "--quiet")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
