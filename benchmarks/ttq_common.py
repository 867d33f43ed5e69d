"""What benchmarks/time_to_quality.py's contenders share: the ONE held-out scorer, the clock that
stops while it scores, the evaluation schedule, and reading a target off an accuracy curve.

The scorer is label likelihood (tailorlm.eval.tasks.label_accuracy): each held-out tweet's prompt is
rendered through the model's chat template exactly as tailorlm trains it, each label word is scored by
its summed log-probability after the prompt, and the most likely label is the prediction. It is the
same function object for every contender (the contenders receive it as an argument; the result names
it), applied to whatever model object the contender trained, in eval mode and without gradients.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Held:
    """The held-out rows and how to score them: everything the scorer needs besides the model."""
    formatter: object        # tailorlm.data.formats.Formatter of the preset's data config
    rows: list[dict]         # {"text", "label"}
    device: str
    precision: str           # autocast of the scorer: the precision every contender trains in
    batch_size: int = 16


def heldout_accuracy(model, held: Held) -> dict:
    """Accuracy and macro-F1 of `model` on the held-out tweets by label likelihood (the most likely of
    the label words after each prompt); tailorlm's own evaluator, used for every contender."""
    from tailorlm.eval.tasks import label_accuracy
    r = label_accuracy(model, held.formatter, held.rows, device=held.device, precision=held.precision,
                       batch_size=held.batch_size)
    return {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"]}


def qualified_name(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


class Clock:
    """Training wall time with the scoring left out: start() when training starts, pause() /
    resume() around each scoring, read() at any time."""

    def __init__(self):
        self.t0, self.paused, self._since = None, 0.0, None

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def pause(self) -> None:
        self._since = time.perf_counter()

    def resume(self) -> None:
        self.paused += time.perf_counter() - self._since
        self._since = None

    def read(self) -> float:
        now = self._since if self._since is not None else time.perf_counter()
        return now - self.t0 - self.paused


class Tracker:
    """Scores a contender's model at step 0 (before the clock starts) and every `every` steps (clock
    paused), keeps the accuracy curve, and says when to stop: every target reached (unless `full`)."""

    def __init__(self, scorer, held: Held, every: int, cap: int, targets: list[float], full: bool = False):
        self.scorer, self.held, self.every, self.cap, self.targets, self.full = scorer, held, every, cap, targets, full
        self.clock, self.curve, self.score_s = Clock(), [], 0.0

    def _score(self, model, step: int, train_s: float) -> dict:
        t = time.perf_counter()
        point = {"step": step, "train_s": round(train_s, 3), **self.scorer(model, self.held)}
        self.score_s += time.perf_counter() - t
        self.curve.append(point)
        return point

    def begin(self, model) -> None:
        self._score(model, 0, 0.0)
        self.clock.start()

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step >= self.cap

    def after_step(self, model, step: int) -> bool:
        """Call after each optimizer step; True when the contender should stop."""
        if not self.due(step):
            return False
        self.clock.pause()
        point = self._score(model, step, self.clock.read())
        self.clock.resume()
        return not self.full and point["accuracy"] >= max(self.targets)

    def result(self) -> dict:
        return {"curve": self.curve, "score_s": round(self.score_s, 1),
                "reached": {str(t): first_reach(self.curve, t) for t in self.targets}}


def first_reach(curve: list[dict], target: float) -> dict | None:
    """The first evaluation (after step 0) whose accuracy is at least `target`: {step, train_s,
    accuracy}; None when none is."""
    for p in curve:
        if p["step"] > 0 and p["accuracy"] >= target:
            return {"step": p["step"], "train_s": p["train_s"], "accuracy": p["accuracy"]}
    return None

