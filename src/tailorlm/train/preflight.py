"""Checks that run before a single step: the data audit, and whether the run can be saved.

Fatal audit findings (unreadable files, no usable rows, malformed lines under on_error: stop) stop
the run before the model loads; the rest are written to the run directory and summarised in one line.
"""
from __future__ import annotations

from pathlib import Path

from ..atomic import write_text
from ..data.read import DataError
from ..run import RunDir


def audit_data(cfg, run: Path, say) -> dict:
    from ..audit import run_audit

    d = cfg.data
    fields = {role: col for role, col in (("text", d.text_field), ("label", d.label_field), ("prompt", d.prompt_field),
                                          ("response", d.response_field), ("messages", d.messages_field)) if col}
    report = run_audit(d.train, d.val, d.test, fmt=d.format, fields=fields, labels=d.labels, on_error=d.on_error)
    write_text(RunDir.at(run).audit_file, report.to_json())   # (renamed into place: a kill never truncates it)
    counts = report.counts()
    if report.exit_code() == 2:
        raise DataError("the data audit found fatal problems; nothing was trained:\n" + report.summary(per_check=3))
    say(f"[tailorlm] data audit: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        + f" (details: {RunDir.at(run).audit_file}; tailorlm audit {d.train} for the full report)")
    return counts


def plan_check(cfg, world: int, say) -> None:
    """Refuse, before the model loads, a run whose predicted peak memory exceeds what it may use
    (train.memory_limit, or what the machine has free), naming the change that fits. Off with
    train.plan_check: false (tailorlm train --no-plan-check). A model the planner cannot describe
    (a classification head, an architecture its probe cannot build) is trained unchecked, with a note."""
    from ..errors import ConfigError, TailorError
    from ..plan import human, plan

    tc = cfg.train
    if not tc.plan_check or cfg.model.task != "causal_lm" or world > 1:
        return   # (several processes: per-process shares of one machine are not modelled)
    try:
        p = plan(cfg, tc.memory_limit)
    except TailorError:
        raise
    except Exception as e:   # the planner's probe could not model this model: train without the check
        say(f"[tailorlm] memory plan skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})", always=True)
        return
    if p.fits is not False:
        return
    fixes = "; or ".join(f"{a['override']} (needs {human(a['needed'])}: x{p.headroom:g} of its {human(a['total'])} "
                         "peak)" for a in p.advice) or \
        "none of smaller micro-batches, checkpointing, LoRA or shorter rows fits"
    where = "train.memory_limit" if tc.memory_limit else p.source
    raise ConfigError(f"predicted peak memory {human(p.total)} (x{p.headroom:g} headroom: {human(p.needed)}) exceeds "
                      f"the {human(p.available)} available ({where}); "
                      f"nothing was loaded. Fix: {fixes}. `tailorlm plan` shows the parts; train.plan_check=false "
                      "(tailorlm train --no-plan-check) runs it anyway")
