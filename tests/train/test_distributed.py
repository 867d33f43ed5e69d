"""Scale-out on PyTorch's own engine: two CPU processes under real torchrun (gloo) train what one
process trains on the same global batch, export what one process exports, checkpoint in a form
any number of processes resumes, and fail as one job."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tailorlm.config import ConfigError, load_config
from tailorlm.train.distributed import Dist
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train

from ..faults import FAIL_AT
from ..conftest import tiny_config
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

STEPS, SAVE = 10, 5
LR = {"lora": 1e-2, "full": 1e-3}


METHOD = {"lora": {"name": "lora", "r": 4, "alpha": 8}, "full": {"name": "full"}}
PARALLEL_RUN = (f"train.steps={STEPS}", "train.grad_accum=2", "train.warmup=2", "train.eval_every=100",
                f"train.save_every={SAVE}", "train.keep_last=5", "train.threads=1", "eval.before=false",
                "eval.keep_best=false", "output.overwrite=true")


def torchrun(*args, env=None, nproc=2, timeout=600) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc-per-node 2 -m tailorlm ...`, one thread a rank."""
    import tailorlm

    src = os.pathsep.join([str(Path(tailorlm.__file__).parents[1]), str(Path(__file__).parents[2])])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tailorlm", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", **(env or {})})


def steps(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def assert_losses_close(got: dict, want: dict, which) -> None:
    for s in which:
        assert abs(got[s]["loss"] - want[s]["loss"]) <= 1e-4 * abs(want[s]["loss"]), (s, got[s], want[s])


def logits_of(run: Path, method: str) -> torch.Tensor:
    """final/ loaded in this one process by the tools a user has: transformers (full), PEFT (lora)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run / "final" if method == "full" else
                                                load_config(run / "config.yaml").model.path)
    if method == "lora":
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, str(run / "final"))
    ids = torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return base.eval()(input_ids=ids).logits


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_llama, tweets_text_file):
    """One process, parallel: none, the same global batch: the numbers the parallel runs must match."""
    done = {}

    def get(method: str) -> Path:
        if method not in done:
            tmp = tmp_path_factory.mktemp(f"single-{method}")
            train(load_config(tiny_config(tmp / "run", tiny_llama, tweets_text_file, *PARALLEL_RUN,
                                          file=tmp / "cfg.yaml", method=METHOD[method],
                                          train={"lr": LR[method], "parallel": "none"})),
                  quiet=True)
            done[method] = tmp / "run"
        return done[method]

    return get


@pytest.fixture(scope="module", params=[("lora", "ddp"), ("lora", "fsdp"), ("full", "ddp"), ("full", "fsdp")],
                ids=lambda p: "-".join(p))
def parallel_run(request, tmp_path_factory, tiny_llama, tweets_text_file):
    method, mode = request.param
    tmp = tmp_path_factory.mktemp(f"{method}-{mode}")
    cfg = tiny_config(tmp / "run", tiny_llama, tweets_text_file, *PARALLEL_RUN, file=tmp / "cfg.yaml",
                      method=METHOD[method], train={"lr": LR[method], "parallel": mode})
    p = torchrun("train", str(cfg), "--quiet", "--json")
    assert p.returncode == 0, p.stderr[-4000:]
    return method, mode, tmp / "run", p


def test_two_processes_train_what_one_process_trains(parallel_run, single):
    method, mode, run, p = parallel_run
    ref = single(method)
    got, want = steps(run), steps(ref)
    assert sorted(got) == list(range(1, STEPS + 1))            # rank 0 alone logged, once per step
    assert_losses_close(got, want, range(1, STEPS + 1))
    for s in got:   # each example seen once per step in total, the global batch the config sets
        assert sorted(got[s]["examples"]) == sorted(want[s]["examples"])
        assert got[s]["target_tokens"] == want[s]["target_tokens"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["parallel"] == mode
    ref_val = json.loads((ref / "summary.json").read_text())["final"]["val_loss"]
    assert abs(summary["final"]["val_loss"] - ref_val) < 1e-4                  # evaluation ran on the sharded model
    assert p.stdout.count('"last_loss"') == 1                   # one summary printed, by rank 0
    ck = run / "checkpoints" / f"step-{STEPS:06d}"
    assert (ck / "dcp" / ".metadata").is_file() and len(list((ck / "dcp").glob("*.distcp"))) >= 1


def test_the_exported_final_loads_in_one_process_to_the_same_logits(parallel_run, single):
    method, _, run, _ = parallel_run
    if method == "full":
        cfg = json.loads((run / "final" / "config.json").read_text())
        assert cfg["architectures"] == ["LlamaForCausalLM"]     # a plain HF folder, no wrapper class
    else:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (run / "final").iterdir()}
    torch.testing.assert_close(logits_of(run, method), logits_of(single(method), method), rtol=1e-4, atol=1e-4)


def test_a_two_process_checkpoint_resumes_in_one_process(parallel_run, single, tmp_path):
    method, _, run, _ = parallel_run
    again = tmp_path / "again"
    shutil.copytree(run, again)
    for p in [again / "checkpoints" / f"step-{STEPS:06d}", again / "final", again / "summary.json"]:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    cfg = load_config(again / "config.yaml", [f"output.dir={again}"])
    summary = train(cfg, resume=True, quiet=True)
    assert summary["processes"] == 1
    got = steps(again)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert_losses_close(got, steps(single(method)), range(SAVE + 1, STEPS + 1))
    assert_losses_close(got, steps(run), range(SAVE + 1, STEPS + 1))


def test_a_one_process_checkpoint_resumes_in_two_processes(single, tmp_path):
    ref = single("lora")
    again = tmp_path / "again"
    shutil.copytree(ref, again)
    for p in [again / "checkpoints" / f"step-{STEPS:06d}", again / "final", again / "summary.json"]:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    p = torchrun("train", "--resume", str(again), "train.parallel=fsdp", "--quiet")
    assert p.returncode == 0, p.stderr[-4000:]
    assert f"resumed from step-{SAVE:06d}" in p.stderr
    assert_losses_close(steps(again), steps(ref), range(SAVE + 1, STEPS + 1))


def test_a_failing_rank_stops_the_job_with_its_message_and_leaves_no_process(tmp_path, tiny_llama, tweets_text_file):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *PARALLEL_RUN, file=tmp_path / "cfg.yaml",
                      method=METHOD["lora"],
                      train={"lr": LR["lora"], "parallel": "fsdp", "callbacks": ["tests.faults:Faults"]})
    t = time.time()
    p = torchrun("train", str(cfg), "--quiet", env={FAIL_AT: "1:3"})
    assert p.returncode != 0
    assert time.time() - t < 120
    out = p.stdout + p.stderr
    assert "RuntimeError: injected failure on rank 1 before step 3" in out
    root = out.split("Root Cause (first observed failure):")[1]   # torchrun's summary names the failing rank
    assert "rank      : 1 (local_rank: 1)" in root and "injected failure on rank 1" in root
    left = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(cfg) in (d / "cmdline").read_bytes().decode(errors="replace"):
                left.append(d.name)
        except OSError:
            pass
    assert left == [], f"processes left behind: {left}"
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r] == [1, 2]


def test_parallel_settings_fail_with_the_key_and_the_fix(monkeypatch):
    from tailorlm.train import distributed

    with pytest.raises(ConfigError, match=r"train.batch_size=5 .* Fix: train.batch_size=6"):
        Dist(rank=0, world=2, mode="ddp").per_rank(5)
    with pytest.raises(ConfigError, match=r"retention.replay is not supported with train.parallel=fsdp"):
        load_config(raw={"data": {"train": "x"}, "train": {"parallel": "fsdp"}, "retention": {"replay": 0.5}})
    monkeypatch.setenv("WORLD_SIZE", "2")   # as torchrun sets it
    with pytest.raises(ConfigError, match=r"train.parallel is none. Fix: train.parallel=ddp"):
        distributed.init("none", "cpu")
