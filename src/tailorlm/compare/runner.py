"""Run a comparison: every run of the grid as an ordinary `tailorlm train` in its own process, then
its costs measured, then compare.json and compare.html. Rerunning the same command resumes it.

    COMPARE/data/<train>-<hash>/   pool.jsonl (the shared shuffle), train-N.jsonl, val.jsonl (--train-sizes)
    COMPARE/runs/<name>/           one ordinary run each (config.yaml, metrics.jsonl, final/, summary.json)
    COMPARE/logs/<name>.log        its console output
    COMPARE/measure/<name>.json    its costs (measure.py) and the processes that trained it
    COMPARE/compare.json, compare.html

A run with final/ and summary.json is finished and never touched again; one with a run folder but no
summary (the compare, or the run, was stopped) continues with `tailorlm train --resume` from its last
verified checkpoint (or starts clean in place when it has none); the rest start fresh. Each run's
process gets the parent's SIGTERM / SIGINT (it checkpoints and stops; the compare then stops and says
how to resume), and on Linux dies with the compare (PR_SET_PDEATHSIG), so no orphan trains on.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_text
from ..errors import TailorError
from ..run.folder import RunDir
from ..run.lock import hold
from . import table
from .grid import RunSpec
from .measure import measure_run


class RunFailed(TailorError):
    """A run of the comparison failed; finished runs are kept and the same command resumes."""
    exit_code = 1


def status(run_dir: Path) -> str:
    """done (final/ and summary.json), resume (a started run without them: its config.yaml is there)
    or fresh (nothing, or a start killed before it wrote its config: train starts it again in place)."""
    run = RunDir.at(run_dir)
    if run.is_finished():
        return "done"
    return "resume" if run.is_run() else "fresh"


def train_command(spec: RunSpec, run_dir: Path, resume: bool) -> list[str]:
    head = [sys.executable, "-m", "tailorlm", "train"]
    if resume:
        return [*head, "--resume", str(run_dir), *spec.overrides, "--quiet"]
    return [*head, spec.config, *spec.overrides, f"output.dir={run_dir}", "--quiet"]


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG: SIGTERM when the compare dies
    except (OSError, AttributeError):
        pass


def child_env() -> dict:
    """The parent's environment, with this tailorlm first on the path (the child imports the same code)."""
    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


def train_one(spec: RunSpec, run_dir: Path, log: Path) -> dict:
    """One attempt at the run in its own process: {"exit", "wall_s", "maxrss_bytes", "signal"}; SIGTERM /
    SIGINT reaching the compare are passed on (the run checkpoints and stops; `signal` names it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = train_command(spec, run_dir, status(run_dir) == "resume")
    got: list[int] = []
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True,
                             preexec_fn=_die_with_parent)

        def forward(signum, frame):
            got.append(signum)
            p.send_signal(signum)
        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            _, st, usage = os.wait4(p.pid, 0)   # (wait4: this child's own peak RSS)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        p.returncode = os.waitstatus_to_exitcode(st)
    return {"exit": p.returncode, "wall_s": round(time.time() - t0, 2), "maxrss_bytes": usage.ru_maxrss * 1024,
            "signal": signal.Signals(got[0]).name if got else None}


def _tail(log: Path, n: int = 6) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return " | ".join(x.strip() for x in lines[-n:] if x.strip())


def run_compare(runs: list[RunSpec], root: Path, *, metric: str = "auto", say=print) -> dict:
    """Train what is not finished, measure what is not measured, write compare.json and compare.html."""
    with hold(root, fix=", or another --out"):   # one process writes a comparison's folder (the same
        return _run_compare(runs, root, metric, say)   # command rerun while it runs is refused)


def _run_compare(runs: list[RunSpec], root: Path, metric: str, say) -> dict:
    from .page import write_page

    rows = []
    for i, spec in enumerate(runs, 1):
        run_dir, mfile = root / "runs" / spec.name, root / "measure" / f"{spec.name}.json"
        meas = json.loads(mfile.read_text()) if mfile.is_file() else {"attempts": []}
        st = status(run_dir)
        if st != "done":
            say(f"[compare] {i}/{len(runs)} {spec.name}: {'resuming' if st == 'resume' else 'training'}")
            attempt = train_one(spec, run_dir, root / "logs" / f"{spec.name}.log")
            meas = {"attempts": [*meas.get("attempts", []), attempt]}
            mfile.parent.mkdir(parents=True, exist_ok=True)
            write_text(mfile, json.dumps(meas, indent=1))
            if attempt["signal"]:
                raise RunFailed(f"stopped by {attempt['signal']} during run {spec.name} (it checkpointed); finished "
                                "runs are kept. Resume: the same tailorlm compare command")
            if attempt["exit"] != 0 or status(run_dir) != "done":
                log = root / "logs" / f"{spec.name}.log"
                raise RunFailed(f"run {spec.name} failed (exit {attempt['exit']}); log {log}: {_tail(log)}. "
                                "Fix the cause and run the same "
                                "command again: finished runs are kept and this one resumes")
        if "latency_ms" not in meas:
            meas.update(measure_run(run_dir))
            write_text(mfile, json.dumps(meas, indent=1))
        rows.append(_row(spec, run_dir, meas, metric, root))
        say(f"[compare] {i}/{len(runs)} {spec.name}: " + _brief(rows[-1]))
    out = _result(runs, rows, root)
    write_text(root / "compare.json", json.dumps(out, indent=1))
    write_page(out, root / "compare.html")
    return out


def _row(spec: RunSpec, run_dir: Path, meas: dict, metric: str, root: Path) -> dict:
    run = RunDir.at(run_dir)
    summary = run.summary(required=True)
    walls = [a["wall_s"] for a in meas.get("attempts", [])]
    rss = [a["maxrss_bytes"] for a in meas.get("attempts", [])]
    report = run.report_file
    row = {"name": spec.name, "label": spec.label, "method": spec.method, "seed": spec.seed, "size": spec.size,
            "dir": str(run_dir.relative_to(root)),
            "report": str(report.relative_to(root)) if report.is_file() else None,
            "train_seed": _seed(run_dir), "steps": summary.get("steps"), "train_tokens": summary.get("train_tokens"),
            **table.run_row(summary, table.domain_metric(summary, metric)),
            **{k: v for k, v in meas.items() if k != "attempts"},
            "wall_time_s": round(sum(walls), 2) if walls else meas.get("summary_wall_time_s"), "attempts": len(walls)}
    if row["peak_rss_bytes"] is None and rss:   # no PeakMemory record: the processes' own peaks (loading included)
        row["peak_rss_bytes"] = max(rss)
    return row


def _seed(run_dir: Path) -> int | None:
    return (RunDir.at(run_dir).config_raw().get("train") or {}).get("seed")


def _brief(r: dict) -> str:
    f = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    flag = f" COLLAPSED: answers {r['collapsed']!r} for every held-out row," if r.get("collapsed") else ""
    return (f"{r['metric']} {f(r['tuned'], '.4f')} (gain {f(r['gain'], '+.4f')}),{flag} NLL change "
            f"{f(r.get('ref_nll_change'), '+.4f')}, {r['trainable_params']:,} trainable, {r['wall_time_s']} s")


def _result(runs: list[RunSpec], rows: list[dict], root: Path) -> dict:
    groups = table.aggregate(rows)
    table.best_flags(groups)
    return {"root": str(root.resolve()), "runs": rows, "groups": groups, "pairs": table.pairs(groups),
            "pareto": table.fronts(groups), "seeds": max(r.seed for r in runs) + 1,
            "sizes": sorted({r.size for r in runs if r.size is not None}),
            "metric": rows[0]["metric"] if rows else None,
            "overrides": {r.name: list(r.overrides) for r in runs}}
