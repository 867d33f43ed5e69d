"""The loop's phases after a step: evaluate and select, checkpoint, stop on a signal, finish.

On a full disk the run goes on where the lost write was not essential (a checkpoint, a log line, a
probe file: each said, the last verified checkpoint kept) and stops cleanly where it was (final/,
summary.json): exit 2, one line saying what is kept, and `--resume` finishes once there is space."""
from __future__ import annotations

import json
import math
import shutil
import signal
import time
from pathlib import Path

from ..atomic import DiskFull, replace_dir, temp_dir_beside, why_full
from ..build import with_method
from ..errors import TailorError
from ..eval.evaluators import evaluate
from ..eval.metrics import deltas, format_scores
from ..probes.store import spare_probes
from ..progress import phase
from ..run import RunDir, start_model
from . import checkpoint
from .signals import Interrupted


class FinalNotWritten(TailorError, OSError):
    """final/ or summary.json could not be written (a full disk, permissions); nothing half-written was
    left, and the last verified checkpoint is there to finish from."""


def due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def evaluate_and_select(run) -> None:
    """Every chosen evaluator (every rank runs the same forwards: FSDP needs it), rank 0's numbers
    decide; the guard picks the best checkpoint and says when to stop early."""
    tc = run.cfg.train
    with phase(f"evaluation at step {run.step}"), spare_probes():
        scores = run.dist.broadcast(evaluate(run.model, run.eval_ctx))
    recent = [h["loss"] for h in run.history[-tc.eval_every:] if math.isfinite(h["loss"])]
    verdict = run.guard.update(run.step, scores, sum(recent) / len(recent) if recent else None)
    run.callbacks.on_eval(run, scores, verdict)
    run.scores = {**scores, "step": run.step}
    if verdict.improved and run.cfg.eval.keep_best:
        try:
            checkpoint.save(RunDir.at(run.run_dir).checkpoints / "best", params=run.params, optimizer=None,
                            state={"step": run.step}, model=run.model, dist=run.dist)
        except OSError as e:  # the best so far could not be kept: say so, keep the run going
            run.guard.best_step = None
            run.log({"checkpoint_error": f"best: {e}"},
                    f"[tailorlm] could not save the best checkpoint ({e}); final/ will be the last step")
    if verdict.stop:
        run.log({"stopped": verdict.stop}, f"[tailorlm] {verdict.stop}; stopping at step {run.step}")
        run.stopped = verdict.stop


def save_checkpoint(run) -> None:
    """An atomic, verified checkpoint of the run state; a failed save keeps the run (and the previous
    checkpoint) alive and says so."""
    root = RunDir.at(run.run_dir).checkpoints
    path = root / f"step-{run.step:06d}"
    try:
        checkpoint.save(path, params=run.params, optimizer=run.opt, state=run.state_dict(), model=run.model,
                        dist=run.dist)
        if run.dist.main:
            checkpoint.rotate(root, run.cfg.train.keep_last)
        run.last_saved = run.step
    except OSError as e:  # disk full, permissions: keep training, keep the last good one
        last, _ = checkpoint.latest(root)
        run.log({"checkpoint_error": str(e)}, f"[tailorlm] checkpoint at step {run.step} failed ({e}); the previous "
                f"one ({last.name if last else 'none'}) is intact; training on")
        return
    run.callbacks.on_save(run, path)


def interrupt(run, signum: int | None) -> None:
    """Every rank stops after the same step, its checkpoint saved; the message says how to resume."""
    run.callbacks.on_train_end(run)
    name = signal.Signals(signum or signal.SIGTERM).name   # (no signum here: another rank's signal)
    run.log({"interrupted": name})
    kept = ("checkpoint saved" if run.last_saved == run.step else "its checkpoint could not be saved (see above), so "
            f"a resume goes on from the last one (step {run.last_saved}); free space first")
    raise Interrupted(signum or signal.SIGTERM, f"stopped by {name} after step {run.step}; {kept}. "
                      f"Resume with: tailorlm train --resume {run.run_dir}")


def finish(run) -> dict:
    """final/ (the best evaluation's weights unless told otherwise) through the method's own save,
    the final scores, summary.json."""
    cfg, dist, g = run.cfg, run.dist, run.guard
    _final_weights(run)
    _write_final(run)
    scores = run.scores
    if scores is None or scores.get("step") != run.step:
        with phase("final evaluation"), spare_probes():
            scores = evaluate(run.model, run.eval_ctx)
    scores = {k: v for k, v in scores.items() if k != "step"}
    summary = {"method": cfg.method.name, "steps": run.step, "trainable_params": run.n_trainable,
               "total_params": run.n_total, "train_tokens": run.tokens_seen, "train_time_s": round(run.train_time, 2),
               "tokens_per_s": round(run.tokens_seen / max(run.train_time, 1e-9), 1),
               "wall_time_s": round(time.time() - run.t_start, 2),
               "first_loss": run.history[0]["loss"] if run.history else None,
               "last_loss": run.history[-1]["loss"] if run.history else None, "base": run.base_scores,
               "final": scores, "delta": deltas(scores, run.base_scores), "skipped_steps": run.skipped_steps,
               "best_step": g.best_step, "stopped_early": run.stopped, "data": run.data.report, "device": run.device,
               "processes": dist.world, "parallel": dist.mode, **({"chosen": run.chosen} if run.chosen else {})}
    for cb in run.callbacks.items:   # a callback's own part (a forgetting budget's "budget")
        if hasattr(cb, "summary_part"):
            summary.update(cb.summary_part(summary))
    if dist.main:
        _write_summary(run, summary)
    run.say(f"[tailorlm] done: {format_scores(scores, run.base_scores)}; {summary['tokens_per_s']} tokens/s "
            f"(the examples' own tokens, padding not counted); run in {run.run_dir}")
    run.callbacks.on_end(run, summary)
    return summary


def _final_weights(run) -> None:
    """The best evaluation's weights into the model, once checkpoints/best verifies and holds that
    step; otherwise the last step's stay, and the log and the console say why."""
    cfg, g = run.cfg, run.guard
    if not (cfg.eval.keep_best and g.best_step is not None and g.best_step != run.step):
        return
    best = RunDir.at(run.run_dir).checkpoints / "best"
    why = run.dist.on_main(_unusable_best, best, g.best_step)
    if why is None:
        try:   # all or nothing: a best/ that verifies but does not fit leaves the last step's weights
            checkpoint.load(best, model=run.model, dist=run.dist)
        except checkpoint.Unloadable as e:
            why = str(e)
    if why is not None:
        run.log({"best_error": why}, f"[tailorlm] checkpoints/best (step {g.best_step}) cannot be used: {why}; "
                f"final/ holds the last step ({run.step}) instead")
        g.best_step = None
        return
    what = ("the start (step 0): no evaluation was within the forgetting budget" if g.best_step == 0 else
            f"the best evaluation (step {g.best_step}, {cfg.eval.metric} {g.best_value:.4f})")
    run.say(f"[tailorlm] final/ holds {what}, not the last step ({run.step})", always=True)
    run.scores = None


def _unusable_best(best: Path, step: int) -> str | None:
    why = checkpoint.verify(best)
    if why is None:
        held = json.loads((best / "state.json").read_text()).get("step")
        why = None if held == step else f"it holds step {held}"
    return why


def _write_summary(run, summary: dict) -> None:
    """summary.json (rank 0), the run's last word: a disk that cannot take it stops the run with
    final/ written and the last checkpoint kept, and `--resume` writes both again."""
    folder = RunDir.at(run.run_dir)
    path = folder.summary_file
    try:
        folder.write_summary(summary)
    except OSError as e:
        last, _ = checkpoint.latest(folder.checkpoints)
        raise _unfinished(run, path, e, "final/ is written, ", last) from None


def _write_final(run) -> None:
    """final/ through the method's own save (parallel: gathered to rank 0 into a plain model, so it is
    what one process would have written), into a hidden folder beside it, renamed into place: a
    failure (a full disk) leaves no half-written final/, and says what is intact and how to finish."""
    dist, final, cfg = run.dist, RunDir.at(run.run_dir).final, run.cfg
    tmp, err = dist.on_main(_temp_beside, final)   # (a full disk can refuse even the empty folder)
    tmp = None if tmp is None else Path(tmp)
    try:
        if err is None:
            dist.save_final(run.method, run.model, run.tok, tmp,
                            rebuild=lambda: with_method(start_model(cfg, tokenizer=run.tok)[0], cfg))
            if dist.main:
                replace_dir(tmp, final)
    except Exception as e:  # noqa: BLE001 - OSError, torch's RuntimeError, safetensors' own: all a failed write
        err = e
    err = dist.broadcast(None if err is None else (why_full(err), checkpoint.describe(err)))   # rank 0's is everyone's
    if err is None:
        return
    if dist.main and tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    last, _ = dist.on_main(checkpoint.latest, RunDir.at(run.run_dir).checkpoints)
    raise _unfinished(run, final, err, "", last)


def _temp_beside(final: Path) -> tuple:
    try:
        return str(temp_dir_beside(final)), None
    except OSError as e:
        return None, e


def _unfinished(run, path: Path, err, kept: str, last) -> FinalNotWritten:
    """The one line of a run stopped at its end: what could not be written and why, what is kept, how to
    finish. `err`: the exception, or (why_full, described) as the ranks share it."""
    if isinstance(err, DiskFull):
        why, reason = True, f": {err.why}"
    else:
        why, said = err if isinstance(err, tuple) else (why_full(err), checkpoint.describe(err))
        reason = f": {why} ({said})" if why else f" ({said})"
    # an error that is not the disk's (a KeyError in a method's save) is ours: space and permissions are no fix
    fix = ("free space" + ("" if why else " (or fix permissions)")) if isinstance(err, (OSError, tuple)) else \
        "this is an error in tailorlm, not in the disk (please report it with the lines above); once it is fixed"
    return FinalNotWritten(f"could not write {path}{reason}; nothing half-written was left, {kept}and the last "
                           f"verified checkpoint ({last.name if last else 'none'}) is intact. Fix: {fix}, then "
                           f"finish with: tailorlm train --resume {run.run_dir}")
