"""Experiment trackers (`train.report_to`): a registry of adapters and the callback that feeds them.

TRACKERS is a plain dict, name -> adapter class (train/tracker_libs.py: TensorBoard, MLflow, trackio,
W&B, all local); adding one is a class and a line. The Trackers callback runs on rank 0 only and
sends each tracker the resolved config as flat dotted params (secrets redacted as in config.yaml,
text cut to what the tracker takes), the base model's scores at step 0 (`eval/...`), each step
record metrics.jsonl logs (`train/loss`, `train/lr`, ...), every evaluation (`eval/...`) and the
final scores (`final/...`), at the run's step.

Logging must never stop a run (MLflow's parameter limits broke HF training: transformers #8849,
#9210), and the loop never waits for a tracker: each one's calls run in order on its own thread
(creating MLflow's SQLite store takes seconds), so a step only queues them (they still take CPU and
the GIL: RUN/trackers.json has their seconds); any exception, ImportError included, switches that
tracker off, and the loop warns once (console and metrics.jsonl) at its next event. The time each
tracker took (start, log, finish), where it wrote and whether it stayed on go to RUN/trackers.json.
A full disk is such a failure, said as one (`the disk is full writing RUN/tensorboard`), also when it
kills a library's own writer thread (TensorBoard's), whose traceback it would otherwise print; and a
trackers.json the disk cannot take is one line too.
"""
from __future__ import annotations

import atexit
import json
import queue
import threading
import time

from ..atomic import DiskFull, why_full, write_text
from ..config import redact
from ..run.folder import RunDir
from .callbacks import Callback, is_logged
from .tracker_libs import MLflow, TensorBoard, Trackio, WandB

TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "trackio": Trackio, "wandb": WandB}
FINISH_WAIT_S = 60   # at the end, how long to wait for a tracker still writing (a hung one is left behind)


def flat_params(node, prefix: str = "") -> dict:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists as JSON text (what every tracker takes)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flat_params(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


def fit(params: dict, limit: int) -> dict:
    """Text values cut to `limit` characters, marked as cut."""
    return {k: v[:limit - 3] + "..." if isinstance(v, str) and len(v) > limit else v for k, v in params.items()}


def scalars(node, prefix: str) -> dict:
    """The numbers of a (nested) record as flat names: {"retention": {"kl": 0.1}} -> {"eval/retention/kl": 0.1}."""
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(scalars(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
            out[f"{prefix}{k}"] = v
    return out


class Worker:
    """One tracker's calls in order on a daemon thread (inline for a tracker that must stay on the
    caller's thread: trackio, which prints and queues on its own); the first failure switches it off."""

    def __init__(self, name: str, tracker):
        self.name, self.tracker, self.error, self.reported = name, tracker, None, False
        self.seconds = {"start": 0.0, "log": 0.0, "finish": 0.0}
        self.inline = getattr(tracker, "inline", False)
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = None if self.inline else threading.Thread(target=self._drain, name=f"tailorlm-{name}",
                                                                daemon=True)
        if self.thread is not None:
            self.thread.start()

    def put(self, what: str, *args, **kwargs) -> None:
        if self.error is not None:
            return
        if self.inline:
            self._call(what, args, kwargs)
        else:
            self.calls.put((what, args, kwargs))

    def close(self, timeout: float) -> bool:
        """Finish, and wait for it; False when the tracker is still busy after `timeout` seconds."""
        self.put("finish")
        if self.thread is None:
            return True
        self.calls.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _drain(self) -> None:
        while (item := self.calls.get()) is not None:
            if self.error is None:
                self._call(*item)

    def _call(self, what: str, args, kwargs) -> None:
        t0 = time.perf_counter()
        try:
            getattr(self.tracker, what)(*args, **kwargs)
        except Exception as e:   # noqa: BLE001 - whatever a tracker raises, training goes on
            self.error = (what, e)
        finally:
            self.seconds[what] += time.perf_counter() - t0


class Trackers(Callback):
    """Feeds the trackers named in train.report_to (setup_run adds it on rank 0 only)."""

    def __init__(self, names: list[str]):
        self.names, self.workers = list(names), {}
        self._hook = self._before = None   # (threading.excepthook while the trackers run: _hook_threads)

    def on_start(self, run) -> None:
        params = flat_params(redact(run.cfg.model_dump(mode="json")))   # as config.yaml shows it
        self._hook_threads()   # (before the first start: a writer thread can die at once)
        for name in self.names:
            cls = TRACKERS[name]
            self.workers[name] = w = Worker(name, cls())
            w.put("start", run.run_dir, fit(params, cls.max_value), run.run_dir.name, step=run.step)
        atexit.register(self._close)   # an interrupted or failed run still closes its trackers' files
        self._warn(run)
        run.say("[tailorlm] trackers: " + ", ".join(f"{n} -> {TRACKERS[n].location(run.run_dir)}"
                                                    for n, w in self.workers.items() if w.error is None))
        if run.step == 0 and run.base_scores:
            self._log(run, scalars(run.base_scores, "eval/"), 0)

    def on_step_end(self, run, rec: dict) -> None:
        if is_logged(rec, run.cfg.train):
            self._log(run, scalars(rec, "train/"), rec["step"])

    def on_eval(self, run, scores: dict, verdict) -> None:
        self._log(run, scalars(scores, "eval/"), run.step)

    def on_end(self, run, summary: dict) -> None:
        self._log(run, scalars(summary.get("final") or {}, "final/"), run.step)
        atexit.unregister(self._close)
        busy = [n for n, w in self.workers.items() if not w.close(FINISH_WAIT_S)]
        self._unhook_threads()
        self._warn(run)
        for name in busy:
            run.log({"tracker_error": {"tracker": name, "call": "finish", "error": f"busy after {FINISH_WAIT_S} s"}},
                    f"[tailorlm] warning: tracker {name} still writing after {FINISH_WAIT_S} s; left behind")
        try:
            write_text(RunDir.at(run.run_dir).trackers_file, json.dumps({n: {
                "where": str(TRACKERS[n].location(run.run_dir)), "on": w.error is None and n not in busy,
                "error": None if w.error is None else f"{w.error[0]}: {type(w.error[1]).__name__}: {w.error[1]}"[:500],
                "seconds": {k: round(v, 3) for k, v in w.seconds.items()}} for n, w in self.workers.items()}, indent=1))
        except DiskFull as e:
            run.say(f"[tailorlm] warning: {e.brief}; the run is unaffected", always=True)

    def _log(self, run, metrics: dict, step: int) -> None:
        self._warn(run)
        if metrics:
            for w in self.workers.values():
                w.put("log", metrics, step)

    def _warn(self, run) -> None:
        """Once per tracker that failed since the last event: the console and metrics.jsonl say so."""
        for name, w in self.workers.items():
            if w.error is None or w.reported:
                continue
            w.reported, (what, e) = True, w.error
            error, full = f"{type(e).__name__}: {str(e)[:300]}", why_full(e)
            why = (f"its package is not installed ({error}; pip install 'tailorlm[{TRACKERS[name].extra}]')"
                   if isinstance(e, ImportError) else
                   f"{what} failed: {full} writing {TRACKERS[name].location(run.run_dir)} ({error})" if full else
                   f"{what} failed ({error})")
            run.log({"tracker_error": {"tracker": name, "call": what, "error": error}},
                    f"[tailorlm] warning: tracker {name}: {why}; switched off, training goes on")

    def _close(self) -> None:
        for w in self.workers.values():
            w.close(FINISH_WAIT_S / 6)
        self._unhook_threads()

    def _hook_threads(self) -> None:
        """A tracker library's own thread (its package is the tracker's name) that dies on a full disk
        switches that tracker off, said by _warn, instead of printing a traceback; any other thread's
        exception goes where it went before."""
        before = self._before = threading.excepthook

        def hook(args) -> None:
            w = self.workers.get(type(args.thread).__module__.split(".")[0]) if args.thread is not None else None
            if w is None or why_full(args.exc_value) is None:
                return before(args)
            if w.error is None:
                w.error = ("write", args.exc_value)
        self._hook = threading.excepthook = hook

    def _unhook_threads(self) -> None:
        if self._hook is not None and threading.excepthook is self._hook:
            threading.excepthook = self._before
        self._hook = None
