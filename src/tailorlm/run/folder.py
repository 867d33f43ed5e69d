"""The run folder as one format: every file and folder tailorlm keeps in a run directory, named
here and nowhere else, read and written through `RunDir`.

    config.yaml      the resolved config (eval, generate, export and resume read it back)
    metrics.jsonl    the append-only log: steps, evaluations, events (a kill may cut its last line)
    samples.jsonl    generated samples at each evaluation (append-only)
    base_eval.json   the base model's scores at step 0
    summary.json     the run's last word, written when it ends
    audit.json       the data audit;  env.json  versions, device, processes
    canaries.json    privacy canaries inserted into the training rows
    probes/NAME.json probe results (probes/store.py);  report.html, explain.html  the pages
    checkpoints/     step-N/ and best/;  final/  the tuned model (the method's own save)
    trackers.json    each tracker's place, state and seconds (train/trackers.py), and what the trackers
                     of train.report_to write (train/tracker_libs.py): tensorboard/, mlflow.db (and
                     SQLite's -journal / -wal / -shm beside it), mlruns/, trackio/, wandb/
    .tailorlm-run    the marker: tailorlm made this folder (state `setup`, then `training`)
    .tailorlm-lock   who is writing the folder now (lock.py)

All of them are the run's own (`is_own`): output.overwrite replaces them with the run, a resume with
nothing to resume starts them again, and nothing else in the folder is ever deleted.

Every whole-file write goes through atomic.write_text (renamed into place: a kill or a full disk
leaves the previous version, never half of one); the logs are appended by train/log.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..atomic import is_debris_of, read_jsonl, write_text
from ..config import Config, load_config, to_yaml
from ..errors import MissingError

CONFIG, METRICS, SAMPLES = "config.yaml", "metrics.jsonl", "samples.jsonl"
SUMMARY, BASE_EVAL, AUDIT, ENV, CANARIES = "summary.json", "base_eval.json", "audit.json", "env.json", "canaries.json"
PROBES, CHECKPOINTS, FINAL = "probes", "checkpoints", "final"
REPORT, EXPLAIN = "report.html", "explain.html"
TRACKERS = "trackers.json"
TENSORBOARD, MLFLOW_DB, MLFLOW_ARTIFACTS, TRACKIO, WANDB = "tensorboard", "mlflow.db", "mlruns", "trackio", "wandb"
MARKER, LOCK = ".tailorlm-run", ".tailorlm-lock"
# everything tailorlm writes at the top of a run directory (and, hidden, their temporaries)
OWN = (CONFIG, METRICS, SAMPLES, CHECKPOINTS, FINAL, SUMMARY, BASE_EVAL, AUDIT, ENV, REPORT, EXPLAIN, CANARIES,
       PROBES, TRACKERS, TENSORBOARD, MLFLOW_DB, MLFLOW_ARTIFACTS, TRACKIO, WANDB, MARKER, LOCK)
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")   # what SQLite keeps beside mlflow.db while (or if killed while) writing


def run_dir_of(path: str | Path) -> Path:
    """A run directory, given it or its final/ folder."""
    p = Path(path)
    return p.parent if p.name == FINAL and (p.parent / CONFIG).is_file() else p


def is_own(name: str) -> bool:
    """A top-level entry tailorlm writes in a run folder (or the debris of an interrupted write of one)."""
    return (name in OWN or any(is_debris_of(name, o) for o in OWN)
            or any(name == MLFLOW_DB + side for side in SQLITE_SIDECARS))


def state(run: str | Path) -> str | None:
    """The marker's state, or None where there is no (readable) marker: not a folder tailorlm made."""
    try:
        return json.loads((Path(run) / MARKER).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return None


def mark(run: str | Path, new_state: str) -> None:
    write_text(Path(run) / MARKER, json.dumps({"tool": "tailorlm", "state": new_state}) + "\n")


def _json(path: Path):
    """A JSON file's content; None where it is absent or unreadable (a run still going, or killed)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class RunDir:
    """One run directory (given it or its final/): its paths, its readers, its atomic writers.
    `RunDir.at(path)` takes `path` as the run folder itself: what train writes into is output.dir
    as named, even where that is a folder called final inside another run."""

    def __init__(self, path: str | Path):
        self.path = run_dir_of(path)

    @classmethod
    def at(cls, path: str | Path) -> "RunDir":
        run = cls.__new__(cls)
        run.path = Path(path)
        return run

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths: every name of the format, as a path in this run
    config_file = property(lambda self: self.path / CONFIG)
    metrics_file = property(lambda self: self.path / METRICS)
    samples_file = property(lambda self: self.path / SAMPLES)
    summary_file = property(lambda self: self.path / SUMMARY)
    base_eval_file = property(lambda self: self.path / BASE_EVAL)
    audit_file = property(lambda self: self.path / AUDIT)
    env_file = property(lambda self: self.path / ENV)
    canaries_file = property(lambda self: self.path / CANARIES)
    probes = property(lambda self: self.path / PROBES)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    final = property(lambda self: self.path / FINAL)
    report_file = property(lambda self: self.path / REPORT)
    explain_file = property(lambda self: self.path / EXPLAIN)
    marker_file = property(lambda self: self.path / MARKER)
    trackers_file = property(lambda self: self.path / TRACKERS)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    mlflow_db = property(lambda self: self.path / MLFLOW_DB)
    mlflow_artifacts = property(lambda self: self.path / MLFLOW_ARTIFACTS)
    trackio = property(lambda self: self.path / TRACKIO)
    wandb = property(lambda self: self.path / WANDB)

    def probe_file(self, name: str) -> Path:
        return self.probes / f"{name}.json"

    def probe_files(self) -> list[Path]:
        return sorted(self.probes.glob("*.json"))

    def artefact(self, which: str = FINAL) -> Path:
        """A saved model of the run: final/ or a checkpoint folder named relative to the run."""
        return self.path / which

    # -- what the folder is
    def is_run(self) -> bool:
        """A run tailorlm started here: config.yaml is written before anything else."""
        return self.config_file.is_file()

    def is_finished(self) -> bool:
        return self.final.is_dir() and self.summary_file.is_file()

    def finished(self, steps=None) -> dict | None:
        """The summary of a run with nothing left to train, from the folder alone (no model loads):
        final/ and summary.json written, no step logged past the summary's, and `steps` (the train.steps
        a resume asks for) no more than it reached, or, for a run that stopped early, the steps it was
        started with. None: a resume has something to do."""
        summary = self.summary()
        if not (isinstance(summary, dict) and isinstance(summary.get("steps"), int) and self.final.is_dir()):
            return None
        done = summary["steps"]
        if any(isinstance(r.get("step"), int) and r["step"] > done for r in self.metrics() if "loss" in r):
            return None   # it trained on after this summary (a resume asking for more steps, killed)
        stored = (self.config_raw().get("train") or {}).get("steps")
        wanted = steps if isinstance(steps, int) else stored
        if isinstance(wanted, int) and wanted > done and not (summary.get("stopped_early") and wanted == stored):
            return None
        return summary

    def has_checkpoints(self) -> bool:
        """A step checkpoint to resume from (whether it verifies is train/checkpoint.py's question)."""
        return self.checkpoints.is_dir() and any(self.checkpoints.glob("step-*"))

    def state(self) -> str | None:
        return state(self.path)

    def mark(self, new_state: str) -> None:
        mark(self.path, new_state)

    # -- readers
    def config(self, overrides: list[str] | None = None) -> Config:
        """The stored config, `overrides` (dotted key=value) applied; MissingError for a folder that is no run."""
        if not self.is_run():
            what = "no such directory" if not self.path.exists() else f"not a tailorlm run (no {CONFIG})"
            raise MissingError(f"{self.path}: {what}. Fix: name a run directory written by tailorlm train")
        return load_config(self.config_file, overrides)

    def config_text(self) -> str | None:
        return self.config_file.read_text() if self.config_file.is_file() else None

    def config_raw(self) -> dict:
        """config.yaml as plain YAML (no validation): {} where it is absent or unparsable."""
        text = self.config_text()
        try:
            raw = yaml.safe_load(text) if text else {}
        except yaml.YAMLError:
            return {}
        return raw if isinstance(raw, dict) else {}

    def metrics(self) -> list[dict]:
        """Every record of metrics.jsonl; a last line cut short by a kill is left out."""
        return [r for r in read_jsonl(self.metrics_file) if isinstance(r, dict)]

    def summary(self, required: bool = False) -> dict | None:
        """summary.json; None while the run is going or after a kill (`required`: the read's own error)."""
        return json.loads(self.summary_file.read_text()) if required else _json(self.summary_file)

    def base_eval(self) -> dict | None:
        return _json(self.base_eval_file)

    def audit(self) -> dict | None:
        return _json(self.audit_file)

    def env(self) -> dict | None:
        return _json(self.env_file)

    def canaries(self) -> dict | None:
        """canaries.json as stored (probes/canaries.py makes it a Canaries); None where none were inserted."""
        return json.loads(self.canaries_file.read_text()) if self.canaries_file.is_file() else None

    # -- writers: whole files, atomically
    def write_config(self, cfg: Config | str) -> None:
        write_text(self.config_file, cfg if isinstance(cfg, str) else to_yaml(cfg))

    def write_json(self, path: Path, obj, **kw) -> None:
        write_text(path, json.dumps(obj, indent=1, **kw))

    def write_summary(self, summary: dict) -> None:
        self.write_json(self.summary_file, summary)

    def write_base_eval(self, scores: dict) -> None:
        self.write_json(self.base_eval_file, scores)
