"""A checkpoint is usable only if every file loads (issue 25, items 3, 5, 7): one whose hashes verify but
whose weights do not load into the run falls back to the previous one, a failed load leaves the model
and optimizer as they were, pickled weights follow model.allow_pickle, torch's advice to load with
weights_only=False is never repeated, and a full disk inside torch.save is called a full disk."""
from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tailorlm.run import load_run
from tailorlm.commands import main
from tailorlm.config import load_config
from tailorlm.errors import ModelError
from tailorlm.train import checkpoint
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train

from ..conftest import tiny_config
from ..run.test_kills_lose_nothing import CrashBefore, _Crash
from ..train.test_resume import RESUMABLE, assert_same_run

UNSAFE_ADVICE = ("weights_only=False", "`weights_only` set to `False`", "can still be loaded", "Re-running",
                 "add_safe_globals", "\x1b")


class Payload:
    """Unpickling this writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('x')",)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama, tweets_text_file) -> Path:
    """The uninterrupted run every resumed one must equal, bit for bit."""
    tmp = tmp_path_factory.mktemp("ref")
    train(load_config(tiny_config(tmp / "ref", tiny_llama, tweets_text_file, *RESUMABLE, "data.audit=false",
                                  file=tmp / "ref.yaml")), quiet=True)
    return tmp / "ref"


def reseal(ckpt: Path) -> None:
    """Rewrite the manifest so the tampered files verify: only loading them can tell."""
    files = json.loads((ckpt / "manifest.json").read_text())
    (ckpt / "manifest.json").write_text(json.dumps({f: checkpoint._sha256(ckpt / f) for f in files}))
    assert checkpoint.verify(ckpt) is None


def killed_run(tmp_path, tiny_llama, tweets_text_file) -> Path:
    """A run that died before step 11: checkpoints at steps 4 and 8."""
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, "data.audit=false",
                      file=tmp_path / "run.yaml")
    with pytest.raises(_Crash):
        train(load_config(cfg), quiet=True, callbacks=[CrashBefore(11)])
    return tmp_path / "run"


def read_params(f: Path) -> dict:
    """Copies, not views of the memory-mapped file (rewriting it under a view is a bus error)."""
    return {k: v.clone() for k, v in load_file(str(f)).items()}


def pickle_renamed(ckpt: Path) -> None:
    torch.save(read_params(ckpt / "trainable.safetensors"), ckpt / "trainable.safetensors")


def wrong_shape(ckpt: Path) -> None:
    params = read_params(ckpt / "trainable.safetensors")
    name = sorted(k for k in params if "lora_A" in k)[0]
    params[name] = torch.zeros(params[name].shape[0] + 1, params[name].shape[1])
    save_file(params, str(ckpt / "trainable.safetensors"))


def resume_lines(capsys, run: Path) -> list[str]:
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("[tailorlm]")]


# ---------------------------------------------------------------- item 3: a checkpoint that does not load

@pytest.mark.parametrize("tamper, why", [(pickle_renamed, "trainable.safetensors cannot be read"),
                                         (wrong_shape, "trainable.safetensors does not fit this run")])
def test_a_verified_checkpoint_that_does_not_load_falls_back_to_the_previous_one(tmp_path, tiny_llama,
                                                                                 tweets_text_file, reference, capsys,
                                                                                 tamper, why):
    run = killed_run(tmp_path, tiny_llama, tweets_text_file)
    tamper(run / "checkpoints" / "step-000008")
    reseal(run / "checkpoints" / "step-000008")
    lines = resume_lines(capsys, run)
    said = [line for line in lines if "step-000008" in line]
    assert said and all(why in line for line in said), lines
    assert "[tailorlm] resumed from step-000004 (step 4)" in lines, lines
    assert not any("Traceback" in line for line in lines)
    assert_same_run(run, reference)                 # as if the run had been resumed from step 4 untouched


def test_when_no_checkpoint_loads_the_run_starts_clean_in_place(tmp_path, tiny_llama, tweets_text_file, reference,
                                                                capsys):
    run = killed_run(tmp_path, tiny_llama, tweets_text_file)
    for step in ("step-000004", "step-000008"):
        wrong_shape(run / "checkpoints" / step)
        reseal(run / "checkpoints" / step)
    lines = resume_lines(capsys, run)
    assert any("step-000004" in line and "does not fit this run" in line for line in lines), lines
    assert any("nothing could be resumed" in line and "starting a clean run" in line for line in lines), lines
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == list(range(1, 13))
    assert json.loads((run / "summary.json").read_text())["base"]
    assert_same_run(run, reference)


def test_a_resume_that_changes_the_method_removes_no_checkpoint(tmp_path, tiny_llama, tweets_text_file, capsys):
    """Overrides that change the trainable tensors make every checkpoint misfit with nothing wrong in
    them: refused in one line naming the key, nothing removed, config.yaml as the checkpoints need it."""
    run = killed_run(tmp_path, tiny_llama, tweets_text_file)
    config = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "method.r=8", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tailorlm train: error: step-000008 does not load") and "changes method" in err, err
    assert sorted(d.name for d in (run / "checkpoints").glob("step-*")) == ["step-000004", "step-000008"]
    assert (run / "config.yaml").read_text() == config


def test_a_failed_load_leaves_the_model_and_optimizer_untouched(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    params = dict(model.named_parameters())
    d = checkpoint.save(tmp_path / "step-000001", params=params, optimizer=opt, state={"step": 1})
    before = {k: v.detach().clone() for k, v in params.items()}
    opt_before = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(opt.state.values())}
    bad = {k: v + 1 for k, v in before.items()}
    bad["1.weight"] = torch.zeros(3, 3)                  # the last tensor read is the wrong shape
    save_file(bad, str(d / "trainable.safetensors"))
    reseal(d)
    with pytest.raises(checkpoint.Unloadable, match=r"1\.weight.*\(3, 3\).*\(2, 3\)"):
        checkpoint.load(d, model=model, optimizer=opt)
    assert all(torch.equal(params[k], before[k]) for k in before)
    after = {i: s for i, s in enumerate(opt.state.values())}
    assert all(torch.equal(after[i][k], v) for i, s in opt_before.items() for k, v in s.items())


# ---------------------------------------------------------------- item 5: model.allow_pickle for adapters

def pickled_final(tmp_path: Path, reference: Path, payload: Path | None = None) -> Path:
    """A copy of a finished LoRA run whose final/ holds adapter_model.bin instead of safetensors."""
    run = tmp_path / "pickled-run"
    run.mkdir()
    shutil.copy(reference / "config.yaml", run)
    shutil.copytree(reference / "final", run / "final")
    weights = read_params(run / "final" / "adapter_model.safetensors")
    (run / "final" / "adapter_model.safetensors").unlink()
    if payload is None:
        torch.save(weights, run / "final" / "adapter_model.bin")
    else:
        with open(run / "final" / "adapter_model.bin", "wb") as fh:
            pickle.dump({**weights, "x": Payload(payload)}, fh, protocol=2)
    return run


def test_a_pickled_adapter_is_refused_by_generate_and_load_run(tmp_path, reference, capsys):
    run = pickled_final(tmp_path, reference)
    assert main(["generate", str(run), "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "adapter_model.bin" in err and "model.allow_pickle" in err and "generate" in err
    with pytest.raises(ModelError, match=r"adapter_model\.bin.*model\.allow_pickle"):
        load_run(run)
    assert main(["export", str(run), "--merge", "--out", str(tmp_path / "exported")]) == 2   # export's input too
    assert "adapter_model.bin" in capsys.readouterr().err and not (tmp_path / "exported").exists()
    # opted in, it loads (through torch.load(weights_only=True))
    assert main(["generate", str(run), "model.allow_pickle=true", "--prompt", "hi", "--max-new-tokens", "2"]) == 0


def test_a_malicious_pickled_adapter_is_one_line_even_when_allowed(tmp_path, reference, capsys):
    marker = tmp_path / "PWNED"
    run = pickled_final(tmp_path, reference, payload=marker)
    assert main(["generate", str(run), "model.allow_pickle=true", "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "weights_only=True" in err, err
    assert not any(a in err for a in UNSAFE_ADVICE), err
    assert not marker.exists()


# ---------------------------------------------------------------- item 7: never torch's unsafe advice

@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_the_refusal_of_a_pickled_optimizer_state_never_advises_weights_only_false(tmp_path, how):
    marker = tmp_path / "PWNED"
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    d = checkpoint.save(tmp_path / "ck" / "step-000001", params={"w": torch.ones(2)}, optimizer=opt,
                        state={"step": 1})
    bad = {"state": {0: Payload(marker)}, "param_groups": []}
    if how == "torch.save":
        torch.save(bad, d / "optimizer.pt")
    else:
        with open(d / "optimizer.pt", "wb") as fh:
            pickle.dump(bad, fh, protocol=4)
    reseal(d)
    why = checkpoint.unreadable(d)
    assert why is not None and why.startswith("optimizer.pt cannot be loaded safely"), why
    assert not any(a in why for a in UNSAFE_ADVICE), why
    last, notes = checkpoint.latest(tmp_path / "ck")
    assert last is None and not any(a in n for n in notes for a in UNSAFE_ADVICE), notes
    assert not marker.exists()


# ---------------------------------------------------------------- item 3: a full disk inside torch.save

@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 1024"),
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: PytorchStreamWriter failed "
                 "writing file data/0: file write failed"),
    OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_inside_torch_save_is_reported_as_a_full_disk(tmp_path, monkeypatch, error):
    def full(*a, **k):
        raise error

    monkeypatch.setattr(torch, "save", full)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(OSError) as e:
        checkpoint.save(tmp_path / "ck" / "step-000004", params={"w": torch.ones(2)}, optimizer=opt,
                        state={"step": 4})
    msg = str(e.value)
    assert "step-000004" in msg and "disk is full" in msg and "\n" not in msg, msg
    assert e.value.errno == errno.ENOSPC
    assert list((tmp_path / "ck").iterdir()) == []          # nothing half-written left


# ---------------------------------------------------------------- item 5: DCP's own pickles, read safely

def dcp_checkpoint(tmp_path: Path, payload_in: str | None, marker: Path):
    """A one-process DCP checkpoint (as train.parallel writes them) of a tiny model and its optimizer,
    sealed; `payload_in` puts a payload into dcp/.metadata or into one of DCP's non-tensor values."""
    import torch.distributed.checkpoint as dcp

    from tailorlm.train.checkpoint_dcp import _state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sd = _state(model, opt)
    if payload_in == "value":
        sd["optim"]["param_groups"][0]["lr"] = Payload(marker)
    d = tmp_path / "ck" / "step-000001"
    (d / "dcp").mkdir(parents=True)
    dcp.save(sd, checkpoint_id=str(d / "dcp"), no_dist=True)
    if payload_in == "metadata":
        with open(d / "dcp" / ".metadata", "wb") as fh:
            pickle.dump(Payload(marker), fh)
    (d / "state.json").write_text(json.dumps({"step": 1}))
    files = ["state.json"] + sorted(f"dcp/{p.name}" for p in (d / "dcp").iterdir())
    (d / "manifest.json").write_text(json.dumps({f: checkpoint._sha256(d / f) for f in files}))
    assert checkpoint.verify(d) is None
    return d, model, opt


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dcp_checkpoints_load_and_their_pickles_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    d, model, opt = dcp_checkpoint(tmp_path / "good", None, marker)
    fresh = torch.nn.Linear(3, 2)
    assert checkpoint.unreadable(d) is None
    checkpoint.load(d, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters(), lr=0.1))
    assert torch.equal(fresh.weight, model.weight)

    d, model, opt = dcp_checkpoint(tmp_path / "meta", "metadata", marker)
    why = checkpoint.unreadable(d)
    assert why is not None and why.startswith("dcp/.metadata cannot be read safely"), why
    with pytest.raises(checkpoint.Unloadable):
        checkpoint.load(d, model=model, optimizer=opt)
    assert not marker.exists()

    d, model, opt = dcp_checkpoint(tmp_path / "value", "value", marker)
    before = model.weight.detach().clone()
    with pytest.raises(checkpoint.Unloadable, match="dcp/ does not load"):
        checkpoint.load(d, model=model, optimizer=opt)
    assert not marker.exists() and torch.equal(model.weight, before)
