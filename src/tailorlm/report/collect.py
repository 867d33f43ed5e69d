"""Read one run directory into what the report draws, whether the run finished, is still going, or
was killed: every file is optional except that the folder must hold a run (config.yaml or
metrics.jsonl), and metrics.jsonl may end in a line cut short by the kill.

    config.yaml     the resolved config (shown as written)
    metrics.jsonl   steps ({"step", "loss", "lr", "grad_norm", "tokens_per_s", ...}), evaluations
                    ({"step", "eval": {...}, "delta", "best", "warnings"}) and events (interruptions,
                    checkpoint errors, early stops)
    base_eval.json  the base model's scores at step 0 (also in summary.json's "base")
    summary.json    written at the end; absent while running or after a kill
    audit.json      the data audit (tailorlm.audit), when train ran it
    env.json        versions, device, processes (written by the training callback at the start)
    probes/*.json   probe results (tailorlm.probes.store)
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from ..errors import MissingError
from ..probes.store import read_probes
from ..run.folder import CONFIG, METRICS, RunDir

VERSIONED = ("tailorlm", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers")
STEP_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s")   # a step record has these (others: evals, events)


def env_info(device: str | None = None, processes: int | None = None, precision: str | None = None) -> dict:
    """What produced a run: Python, platform, the libraries' versions, the device and its name."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True),
           "cpus": os.cpu_count(), "versions": versions, "device": device, "processes": processes,
           "precision": precision}
    try:
        import torch

        out["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001  (the report never fails for want of a device name)
        pass
    return out


def status(metrics: list[dict], summary: dict | None, planned: int | None) -> str:
    """finished / stopped early / interrupted by a signal / no summary (still going, or killed)."""
    last = max((r.get("step", 0) for r in metrics), default=0)
    stop = next((r["interrupted"] for r in reversed(metrics) if "interrupted" in r), None)
    if summary is not None:
        why = summary.get("stopped_early")
        return f"stopped early at step {summary.get('steps')}: {why}" if why else f"finished, {summary.get('steps')} steps"
    if stop:
        return f"interrupted by {stop} at step {last} of {planned}; resumable"
    return f"no summary.json: still running, or killed; last logged step {last} of {planned}"


def _rows(data: dict, split: str, key: str = "rows"):
    """A split's count in summary.json's data (a run from before the test split had its own entry:
    `test_rows`); None when not recorded."""
    rec = data.get(split)
    return rec.get(key) if isinstance(rec, dict) else (data.get("test_rows") if split == "test" else None)


def scored_on(cfg: dict, data: dict, scores: list[dict]) -> dict:
    """{evaluator: (split, rows or None)} as eval/evaluators.py's EvalContext.scored_on slices them:
    val_loss the validation examples, accuracy and fewshot the held-out rows (the test split when the
    run had one), generation eval.generate of those, each at most eval.max_examples. A classifier's
    held-out count is its predicted labels' total, where any of `scores` has one."""
    ev = cfg.get("eval") or {}
    cap = ev.get("max_examples") if isinstance(ev.get("max_examples"), int) else None
    has_test = bool(data.get("test_rows") or isinstance(data.get("test"), dict)
                    or (not data and (cfg.get("data") or {}).get("test")))
    held = "test" if has_test else "val"
    capped = lambda n, c: None if n is None else min(n, c) if isinstance(c, int) else n  # noqa: E731
    predicted = next((s["predicted"] for s in scores if isinstance(s.get("predicted"), dict)), None)
    n_held = sum(predicted.values()) if predicted else capped(_rows(data, held), cap)
    return {"val_loss": ("val", capped(_rows(data, "val", "examples"), cap)), "accuracy": (held, n_held),
            "fewshot": (held, n_held), "generation": (held, capped(_rows(data, held), ev.get("generate") or 0))}


def is_classification(summary: dict | None, scores: list[dict]) -> bool:
    """Whether the run is a classifier's: its data's format, or (while running) an accuracy scored."""
    fmt = ((summary or {}).get("data") or {}).get("format")
    return fmt == "classification" if fmt else any("accuracy" in s for s in scores)


def read_run(run_dir: str | Path) -> dict:
    """Everything the report shows of one run; raises MissingError when the folder holds no run."""
    run = RunDir.at(run_dir)
    d = run.path
    cfg_text = run.config_text()
    if cfg_text is None and not run.metrics_file.is_file():
        raise MissingError(f"{d}: no run here (neither {CONFIG} nor {METRICS}). Fix: give the "
                           "run's directory (output.dir of its config)")
    cfg = run.config_raw()
    metrics = run.metrics()
    summary = run.summary()
    base = run.base_eval() or (summary or {}).get("base") or {}
    planned = (cfg.get("train") or {}).get("steps")
    evals = [r for r in metrics if isinstance(r.get("eval"), dict)]
    scores = [(summary or {}).get("final") or {}, *(e["eval"] for e in reversed(evals)), base]
    return {"name": d.resolve().name, "dir": str(d.resolve()), "config_text": cfg_text, "config": cfg,
            "steps": [r for r in metrics if "loss" in r and "eval" not in r], "evals": evals,
            "classification": is_classification(summary, scores),
            "scored_on": scored_on(cfg, (summary or {}).get("data") or {}, scores),
            "events": [r for r in metrics if "eval" not in r and not any(k in r for k in STEP_KEYS)],
            "base": base, "summary": summary, "audit": run.audit(), "env": run.env(),
            "probes": read_probes(d), "status": status(metrics, summary, planned), "planned": planned}
