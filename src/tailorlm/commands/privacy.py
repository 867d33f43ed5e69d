"""`tailorlm privacy RUN`: what the tuned model memorised, beside the base model on the same inputs.

Canary exposure (the run's privacy.canaries, from RUN/canaries.json), discoverable extraction on
training vs held-out examples, membership inference with the base model as the reference; each with
a bootstrap interval. The training rows are re-read from the run's config (the same seeded split);
of them, only those the run trained on by the step its final/ holds (summary.json; the run's data
order replayed) are "training"; held-out rows are validation, test and the training rows it never
reached. Results go to RUN/probes/privacy.json (`tailorlm report`). The console ends with one line per
judged figure (probes/privacy.judge): better, worse (red on a terminal) or no significant change.
"""
from __future__ import annotations

import html
import math
import sys
from pathlib import Path

HELP = "memorisation and privacy: canary exposure, extraction, membership inference (base vs tuned)"
EXAMPLES = """examples:
  tailorlm privacy runs/my-run                          every probe, 300 examples of each side
  tailorlm privacy runs/my-run --k 8 --m 8              short rows (tweets): shorter prompts and continuations
  tailorlm privacy runs/my-run --max-examples 1000      more examples: TPR at low FPR needs them
  tailorlm privacy runs/my-run --window prompt          extraction of the prompts (never trained on) instead"""
VERDICT_HEAD = ("verdicts (worse: a significant rise, more memorised or a sharper attack; better: a significant "
                "fall; significant: the paired 95% interval of the change excludes 0):")


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory (its final/ is the tuned model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's stored config (model.path=...)")
    p.add_argument("--k", type=int, default=None, help="extraction: prompt tokens (default privacy.prefix_tokens)")
    p.add_argument("--m", type=int, default=None, help="extraction: continuation tokens (default privacy.suffix_tokens)")
    p.add_argument("--max-examples", type=int, default=300, help="training and held-out examples scored, each (300)")
    p.add_argument("--window", choices=("trained", "prompt"), default="trained",
                   help="extraction: `trained` (default) takes the m tokens from the trained ones (responses, "
                   "labels; all of plain text); `prompt` right after the shared head, in the untrained prompt")


def privacy_command(a) -> int:
    from ..errors import ConfigError
    from ..run.folder import run_dir_of
    from ..run.lock import hold_run

    if (a.k is not None and a.k < 1) or (a.m is not None and a.m < 1) or a.max_examples < 2:
        raise ConfigError("tailorlm privacy: --k and --m must be at least 1, --max-examples at least 2")
    run_dir = run_dir_of(a.run)
    with hold_run(run_dir):   # it writes RUN/probes/privacy.json: not while another process writes the run
        return _probe(a, run_dir)


def _probe(a, run_dir: Path) -> int:
    from ..probes.canaries import Canaries
    from ..probes.privacy import privacy_probe
    from ..probes.store import write_probe
    from ..probes.verdict import finding_line, use_color, verdict_block, verdict_html, wrap
    from ..run import open_run

    opened = open_run(run_dir, a.overrides)
    cfg, model = opened.cfg, opened.model
    data = opened.data   # the user's rows only: no canary
    device = opened.device
    canaries = Canaries.load(run_dir)
    k, m = a.k or cfg.privacy.prefix_tokens, a.m or cfg.privacy.suffix_tokens
    rows, warnings, extra = privacy_probe(model.to(device), cfg, data, canaries, k=k, m=m, n=a.max_examples,
                                          device=device, step=final_step(run_dir, cfg), window=a.window)
    note = membership_note(extra["membership"]) if "membership" in extra else None
    page = (f"<p>{html.escape(note)}</p>" if note else "") + verdict_html(rows, VERDICT_HEAD)
    path = write_probe(run_dir, "privacy", title="Memorisation and privacy", rows=rows, warnings=warnings,
                       extra=extra, html=page or None)
    lines = [table(rows)] + ([f"\n{note}"] if note else []) + [f"warning: {w}" for w in warnings]
    if canaries is None:
        lines.append("no canaries in this run (privacy.canaries.count=0 when it trained)")
    lines.append(f"written: {path}\n")
    print(wrap("\n".join(lines)))
    found = [finding_line(r, 1) for r in rows if r.get("verdict")]
    print(verdict_block(found, VERDICT_HEAD, use_color(sys.stdout)))
    return 0


def final_step(run_dir: Path, cfg) -> int | None:
    """The step final/ holds: the best evaluation's (summary.json best_step, with eval.keep_best) or
    the last; None when the run wrote no summary.json."""
    from ..run.folder import RunDir

    run = RunDir.at(run_dir)
    if not run.summary_file.is_file():
        return None
    s = run.summary(required=True)
    return s["best_step"] if cfg.eval.keep_best and s.get("best_step") is not None else s.get("steps")


def membership_note(mb: dict) -> str:
    """The AUCs with their own intervals (the table's interval is of the change)."""
    if "reference_auc" not in mb:
        return "Membership inference: the run trained on none of the training rows; nothing to score."
    ci = lambda d: f"{d['value']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"  # noqa: E731
    of = f" (of {mb['training_rows']} training rows the run trained on {mb['trained_rows']})" \
        if mb.get("trained_rows") is not None else ""
    return (f"Membership inference, {mb['members']} trained-on{of} vs {mb['non_members']} held-out examples: reference "
            f"attack AUC {ci(mb['reference_auc'])}; loss attack AUC tuned {ci(mb['loss_auc_tuned'])}, base model "
            f"(the control: 0.5 = chance) {ci(mb['loss_auc_base'])}." + (" VOID: the control is off chance."
                                                                          if mb.get("void") else ""))


def _num(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def table(rows: list[dict]) -> str:
    """Per metric a block: its name, then per group n, base, tuned, change and the paired 95% interval
    of the change (* when it excludes 0): within 100 columns whatever the metric's name."""
    width = max([5] + [len(str(r.get("group", ""))) for r in rows])
    lines: list[str] = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        lines += ["", metric, f"  {'group':<{width}} {'n':>5} {'base':>7} {'tuned':>7} {'change':>7}  95% CI"]
        for r in (r for r in rows if r["metric"] == metric):
            lines.append(f"  {str(r.get('group', '')):<{width}} {str(r.get('n', '')):>5} {_num(r['base']):>7} "
                         f"{_num(r['tuned']):>7} {_num(r['change'], True):>7}  [{_num(r['lo'], True)}, "
                         f"{_num(r['hi'], True)}]{' *' if r.get('significant') else ''}")
    return "\n".join(lines[1:])
