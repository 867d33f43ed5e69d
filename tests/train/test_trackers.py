"""Experiment trackers (train.report_to): each one's data read back with its own reader, the run's
network traffic traced, and trackers that fail (raise, or are not installed) never change training."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tailorlm.config import load_config, to_yaml
from tailorlm.errors import ConfigError
from tailorlm.train import train
from tailorlm.train import trackers as T
from tailorlm.train.log import read_metrics

from ..conftest import tiny_config
from ..tiny_models import CLS_RUN, one_thread, tweets_cls_file  # noqa: F401  (autouse; a fixture)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "OMP_NUM_THREADS": "1"}
ALL = ["tensorboard", "mlflow", "trackio", "wandb"]
LIBS = ("tensorboard", "mlflow", "trackio", "wandb")
STRACE = shutil.which("strace")   # (Debian's strace; without it the network check is left out)
# trains from a config file like `tailorlm train`, then says which tracker libraries the process imported
RUN_CLI = ("import json, sys; from tailorlm.commands import main; rc = main(['train', sys.argv[1], *sys.argv[2:]]); "
           f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({LIBS!r})))); sys.exit(rc)")


TRACKED = (*CLS_RUN, "train.steps=6", "train.log_every=2", "train.eval_every=3", "train.save_every=6",
           "train.threads=1")


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def test_report_to_is_validated_with_a_suggestion():
    raw = {"data": {"train": "x.jsonl"}}
    with pytest.raises(ConfigError, match=r"train.report_to: unknown tracker 'tensorbord'.*Did you mean 'tensorboard'"):
        load_config(raw={**raw, "train": {"report_to": ["tensorbord"]}})
    assert load_config(raw={**raw, "train": {"report_to": "wandb"}}).train.report_to == ["wandb"]
    assert load_config(raw=raw, overrides=["train.report_to=[mlflow, trackio]"]).train.report_to == ["mlflow", "trackio"]
    assert load_config(raw=raw).train.report_to == []
    assert set(T.TRACKERS) == set(ALL)   # every name the config accepts has an adapter


def test_params_are_flat_and_cut_to_what_mlflow_takes(tmp_path):
    """MLflow refused params over its limit (transformers #8849; 3.x cuts them itself, unmarked, with a
    warning per value): fit() cuts them first, marked as cut."""
    from mlflow.tracking import MlflowClient

    params = T.flat_params({"data": {"system": "x" * 7000, "labels": ["a", "b"]}, "train": {"lr": 1e-4, "x": None}})
    assert params == {"data.system": "x" * 7000, "data.labels": '["a", "b"]', "train.lr": 1e-4, "train.x": None}
    ml = T.MLflow()
    ml.start(tmp_path / "cut", T.fit(params, ml.max_value), "cut")
    ml.finish()
    got = MlflowClient(tracking_uri=ml.location(tmp_path / "cut")).get_run(ml.run_id).data.params
    assert got["data.system"] == "x" * 5997 + "..." and got["train.lr"] == "0.0001" and got["train.x"] == "None"


def _trace_connects(trace: Path) -> list[str]:
    """connect() calls to anything but this machine, from every process of the run (wandb-core included)."""
    calls = [ln for ln in trace.read_text().splitlines() if "connect(" in ln and "AF_INET" in ln]
    return [c for c in calls if not re.search(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"', c)]


def test_each_tracker_holds_the_logged_metrics_read_back_by_its_own_reader(tiny_llama, tweets_cls_file, tmp_path):
    runs = {}
    for name, report_to in (("plain", []), ("tracked", ALL)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(to_yaml(tiny_config(tmp_path / name, tiny_llama, tweets_cls_file, *TRACKED,
                                           train={"report_to": report_to})))
        trace = tmp_path / f"{name}.strace"   # every process's connect() calls, wandb-core's included
        strace = ["strace", "-f", "--seccomp-bpf", "-e", "trace=connect", "-o", str(trace)] if STRACE else []
        p = subprocess.run([*strace, sys.executable, "-c", RUN_CLI, str(cfg)], env=ENV, capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
        runs[name] = tmp_path / name
        assert not STRACE or _trace_connects(trace) == []   # no tracker (nor anything else) reached for the network
        imported = json.loads(p.stdout.strip().splitlines()[-1])
        assert imported == ([] if name == "plain" else sorted(LIBS)), imported   # no report_to: none imported
    run, log = runs["tracked"], read_metrics(runs["tracked"] / "metrics.jsonl")
    assert not [r for r in log if "tracker_error" in r]
    status = json.loads((run / "trackers.json").read_text())
    assert sorted(status) == sorted(ALL) and all(t["on"] and t["error"] is None for t in status.values())
    want = losses(run)
    assert sorted(want) == [1, 2, 4, 6] and want == losses(runs["plain"])   # trackers change nothing
    evals = {r["step"]: r["eval"]["val_loss"] for r in log if "eval" in r}
    evals[0] = json.loads((run / "base_eval.json").read_text())["val_loss"]
    params = T.flat_params(yaml.safe_load((run / "config.yaml").read_text()))   # as config.yaml has them

    _tensorboard(run, want, evals)
    _mlflow(run, want, evals, params)
    _trackio(run, want, evals)
    _wandb(run, want, evals, params)


def _tensorboard(run: Path, want: dict, evals: dict) -> None:
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tensorboard"))
    ea.Reload()
    # TensorBoard's scalars are float32
    assert {e.step: e.value for e in ea.Scalars("train/loss")} == {k: float(np.float32(v)) for k, v in want.items()}
    assert {e.step: e.value for e in ea.Scalars("eval/val_loss")} == {k: float(np.float32(v)) for k, v in evals.items()}


def _mlflow(run: Path, want: dict, evals: dict, params: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    (mr,) = client.search_runs([client.get_experiment_by_name("tailorlm").experiment_id])
    assert mr.info.run_name == run.name and mr.info.status == "FINISHED"
    assert {m.step: m.value for m in client.get_metric_history(mr.info.run_id, "train/loss")} == want
    assert {m.step: m.value for m in client.get_metric_history(mr.info.run_id, "eval/val_loss")} == evals
    assert mr.data.params == {k: str(v) for k, v in params.items()}


def _trackio(run: Path, want: dict, evals: dict) -> None:
    """trackio fixes its folder when imported: read in a fresh process pointed at the run's store."""
    code = ("import json, trackio; from trackio.sqlite_storage import SQLiteStorage as S; "
            "names = [r.name for r in trackio.Api().runs('tailorlm')]; "
            "print(json.dumps([names, S.get_logs('tailorlm', names[0])]))")
    p = subprocess.run([sys.executable, "-c", code], env={**ENV, "TRACKIO_DIR": str(run / "trackio")},
                       capture_output=True, text=True, timeout=120)
    names, logs = json.loads(p.stdout.strip().splitlines()[-1])
    assert names == [run.name]
    assert {r["step"]: r["train/loss"] for r in logs if "train/loss" in r} == want
    assert {r["step"]: r["eval/val_loss"] for r in logs if "eval/val_loss" in r} == evals


def _wandb(run: Path, want: dict, evals: dict, params: dict) -> None:
    """The offline run's .wandb log, printed by wandb's own inspector."""
    (log,) = run.glob("wandb/offline-run-*/run-*.wandb")
    p = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)], capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    records = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    rows = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert {r["_step"]: r["train/loss"] for r in rows if "train/loss" in r} == want
    assert {r["_step"]: r["eval/val_loss"] for r in rows if "eval/val_loss" in r} == evals
    config = next(r["run"]["config"]["update"] for r in records if r["type"] == "run")
    assert {k: v for k, v in config.items() if k != "_wandb"} == params
    assert records[-1]["type"] == "exit" and records[-1]["exit"]["exit_code"] == 0


class Boom:
    """Raises on every call."""
    extra, max_value, calls = "boom", 100, []
    location = staticmethod(lambda run_dir: "nowhere")

    def start(self, *a, **kw):
        Boom.calls.append("start")
        raise RuntimeError("server gone")

    log = finish = start


class LateBoom:
    """Starts, then refuses the first value it is given (as MLflow refuses an over-long param)."""
    extra, max_value, calls = "lateboom", 100, []
    location = staticmethod(lambda run_dir: "nowhere")

    def start(self, *a, **kw):
        LateBoom.calls.append("start")

    def log(self, metrics, step):
        LateBoom.calls.append(step)
        raise ValueError(f"refused {sorted(metrics)[0]}")

    def finish(self):
        LateBoom.calls.append("finish")


def test_failing_trackers_warn_once_are_switched_off_and_change_nothing(tiny_llama, tweets_cls_file, tmp_path,
                                                                         monkeypatch, capsys):
    base = train(tiny_config(tmp_path / "plain", tiny_llama, tweets_cls_file, *TRACKED), quiet=True)
    monkeypatch.setitem(T.TRACKERS, "tensorboard", Boom)      # raises on every call
    monkeypatch.setitem(T.TRACKERS, "mlflow", LateBoom)       # raises on its first log
    monkeypatch.setitem(sys.modules, "wandb", None)           # not installed: `import wandb` raises ImportError
    capsys.readouterr()
    got = train(tiny_config(tmp_path / "boom", tiny_llama, tweets_cls_file, *TRACKED,
                            train={"report_to": ["tensorboard", "mlflow", "wandb"]}),
                quiet=True)
    err = capsys.readouterr().err
    assert got["last_loss"] == base["last_loss"] and losses(tmp_path / "boom") == losses(tmp_path / "plain")
    assert got["final"] == base["final"]
    assert Boom.calls == ["start"] and LateBoom.calls == ["start", 0]   # switched off after their first failure
    errors = {r["tracker_error"]["tracker"]: r for r in read_metrics(tmp_path / "boom" / "metrics.jsonl")
              if "tracker_error" in r}
    assert sorted(errors) == ["mlflow", "tensorboard", "wandb"]
    assert errors["tensorboard"]["tracker_error"]["error"] == "RuntimeError: server gone"
    assert errors["mlflow"]["tracker_error"]["call"] == "log"
    assert errors["wandb"]["tracker_error"]["error"].startswith(("ImportError", "ModuleNotFoundError"))
    for name in errors:   # one warning each, on the console too
        assert err.count(f"warning: tracker {name}:") == 1, err
    assert "pip install 'tailorlm[wandb]'" in err
    status = json.loads((tmp_path / "boom" / "trackers.json").read_text())
    assert {n: t["on"] for n, t in status.items()} == {"tensorboard": False, "mlflow": False, "wandb": False}
    assert status["mlflow"]["error"] == "log: ValueError: refused eval/accuracy"
