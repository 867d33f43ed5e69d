"""`tailorlm train CFG [key=value ...]` and `tailorlm train --resume RUN [key=value ...]`.

At the end the summary is a table: each score of the base model (step 0) and of the tuned one, the
change and whether it is better (the metric's own direction, eval/specs.py), then the steps, time and
run folder; `--json` prints the summary's main keys as JSON instead. A resume of a run with nothing
left to train says so from its folder alone, no model loaded. Data files that are not there are said
before anything starts, with the path looked for (relative paths are the working directory's) and,
for a preset, where its data comes from and the command that makes it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from pathlib import Path

HELP = "fine-tune a model from a config"
EXAMPLES = """examples:
  tailorlm train my.yaml train.lr=1e-4 method.r=8        dotted overrides win over the file
  tailorlm train --preset airline-lora train.steps=20    a shipped config (tailorlm presets lists them)
  tailorlm train --resume runs/my-run                     continue from the last verified checkpoint
  tailorlm train --resume runs/my-run train.steps=200     train a finished run further"""
WIDTH = 100   # the console lines' width (a path may run past it)
JSON_KEYS = ("steps", "first_loss", "last_loss", "tokens_per_s", "base", "final")   # what --json prints


def add_arguments(p) -> None:
    p.add_argument("config", nargs="?", help="YAML config; not needed with --preset or --resume")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 method.r=8")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last good checkpoint")
    p.add_argument("--preset", metavar="NAME", help="a config shipped with tailorlm (tailorlm presets lists them)")
    p.add_argument("--no-plan-check", action="store_true", help="start even when tailorlm plan predicts more memory "
                   "than there is (train.plan_check=false)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or setup lines: evaluations, warnings "
                   "and errors only")
    p.add_argument("--json", action="store_true", help="print the summary (steps, losses, tokens/s, base and final "
                   "scores) as JSON instead of a table")


def train_command(a) -> int:
    from ..config import ConfigError, load_config
    from ..run.folder import RunDir
    from .presets import config_argument

    if a.config and "=" in a.config:  # `train --resume RUN key=value`: no config file given
        a.overrides, a.config = [a.config, *a.overrides], None
    preset, a.config = a.preset, config_argument(a.config, a.preset)
    if a.no_plan_check:   # an override like any other, validated with the rest
        a.overrides = [*a.overrides, "train.plan_check=false"]
    if a.resume:
        cfg = load_config(RunDir.at(a.resume).config_file, a.overrides + [f"output.dir={a.resume}"])
        if (done := RunDir.at(a.resume).finished(cfg.train.steps)) is not None:
            return _finished(done, a.resume, a.json)
    elif a.config is None:
        raise ConfigError("train needs a config file, --preset NAME or --resume RUN. Fix: tailorlm presets lists "
                          "the presets")
    else:
        cfg = load_config(a.config, a.overrides)
    check_data(cfg, preset)
    from ..train import train

    summary = train(cfg, resume=bool(a.resume), quiet=a.quiet)
    if os.environ.get("RANK", "0") != "0":   # under torchrun, rank 0 speaks for the job
        return 0
    return show(summary, cfg.output.dir, a.json)


def _finished(summary: dict, run: str, as_json: bool) -> int:
    """A resume with nothing left to train: said at once, with the run's summary (no model loads)."""
    if os.environ.get("RANK", "0") != "0":
        return 0
    n = summary["steps"]
    print(f"[tailorlm] {run} is finished ({n} steps): nothing to resume. To train it further: tailorlm train "
          f"--resume {run} train.steps=N (N > {n})", file=sys.stderr, flush=True)
    return show(summary, run, as_json)


def show(summary: dict, run_dir, as_json: bool) -> int:
    print(json.dumps({k: summary.get(k) for k in JSON_KEYS}, indent=1) if as_json else summary_table(summary, run_dir))
    return 0


def check_data(cfg, preset: str | None) -> None:
    """data.train / val / test files that are not there, in one line before anything starts (not the
    audit's block): each as written and as looked for, and for a preset, its data note and command."""
    from ..data.read import train_files
    from ..errors import DataError
    from .presets import command, data_note, preset_path

    named = [("data.train", p) for p, _ in train_files(cfg.data.train)]
    named += [(k, Path(v).expanduser()) for k, v in (("data.val", cfg.data.val), ("data.test", cfg.data.test)) if v]
    missing = [(k, p) for k, p in named if not p.exists()]
    if not missing:
        return
    relative = any(not p.is_absolute() for _, p in missing)
    where = (f" (looked for {', '.join(str(p.absolute()) for _, p in missing)}: data paths are relative to the "
             "working directory)" if relative else "")
    note = data_note(preset_path(preset)) if preset else None
    if note:
        fix = f"Its data: {note}. Fix: {command(preset_path(preset))}"
    elif relative:
        fix = "Fix: run from the folder the paths are relative to, or name each file from here (data.train=PATH)"
    else:
        fix = "Fix: check data.train / data.val / data.test in the config"
    raise DataError(f"{', '.join(f'{k} {p}' for k, p in missing)}: no such file{where}; nothing was started. {fix}")


def summary_table(summary: dict, run_dir) -> str:
    """The run's scores as a table (metric | base | tuned | change, better or worse by the metric's
    direction; change = tuned - base, summary's "delta"), then its warnings, steps, time and folder."""
    from ..eval.specs import OWNER, find, is_number

    base, final, delta = summary.get("base") or {}, summary.get("final") or {}, summary.get("delta") or {}
    rows = [("metric", "base", "tuned", "change", "")]
    for k, v in final.items():
        if not is_number(v) or k in hidden(summary):   # (what `eval`'s table leaves out too)
            continue
        b, d, spec = base.get(k), delta.get(k), find(k)
        verdict = spec.good_change(b, v) if spec is not None and is_number(b) and is_number(d) else None
        word = {True: "better", False: "worse"}.get(verdict, "")
        if final.get("collapsed") is not None and OWNER.get(k) == OWNER.get("accuracy") and word:
            word = "collapsed"   # one class for every row: its scores' gain is no success
        rows.append((k, _num(b), _num(v), _num(d, "{:+.4f}"), word))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:4], widths[1:])]
                       + ([r[4]] if r[4] else [])) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += _warnings(summary) + _choices(summary)
    loss = (f", loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}"
            if is_number(summary.get("first_loss")) and is_number(summary.get("last_loss")) else "")
    lines.append(f"{summary.get('steps')} steps{loss}; {summary.get('trainable_params') or 0:,} of "
                 f"{summary.get('total_params') or 0:,} parameters trained ({summary.get('method')})")
    lines.append(f"time: train {_seconds(summary.get('train_time_s'))}, wall {_seconds(summary.get('wall_time_s'))}; "
                 f"{summary.get('tokens_per_s')} tokens/s")
    lines.append(f"run folder: {run_dir} (the tuned model in final/)\nits page: tailorlm report {run_dir}")
    return "\n".join(lines)


def hidden(summary: dict) -> set[str]:
    """The scores neither table shows: counts, and a classifier's perplexity (commands/evaluate.py)."""
    from ..eval.metrics import NOT_FOR_CLASSIFICATION
    from .evaluate import HIDDEN

    classify = (summary.get("data") or {}).get("format") == "classification"
    return HIDDEN | (NOT_FOR_CLASSIFICATION if classify else set())


def _warnings(summary: dict) -> list[str]:
    """What the numbers above do not show: a collapse to one class, an early stop."""
    final, out = summary.get("final") or {}, []
    if final.get("accuracy_warning"):   # (a collapse to one class among them: eval/tasks.py)
        out.append(f"warning: {final['accuracy_warning']}")
    elif final.get("collapsed") is not None:
        out.append(f"warning: the tuned model answered {final['collapsed']!r} for every held-out row")
    if summary.get("stopped_early"):
        out.append(f"stopped early: {summary['stopped_early']}")
    return [w for line in out for w in textwrap.wrap(line, WIDTH, subsequent_indent="  ")]


def _choices(summary: dict) -> list[str]:
    """What the run chose for itself (`auto`) and the forgetting budget's outcome, each in one line."""
    chosen, data, out = summary.get("chosen") or {}, summary.get("data") or {}, []
    if chosen.get("lr") is not None:
        out.append(f"train.lr: auto chose {chosen['lr']:g}")
    if (sa := data.get("steps_auto")) and sa.get("steps"):
        out.append(f"train.steps: auto chose {sa['steps']} ({sa.get('epochs')} epochs of {sa.get('examples')} examples)")
    if data.get("balance") not in (None, "none"):
        out.append(f"classes balanced by {data['balance']} (data.balance)")
    b = summary.get("budget") or {}
    if b.get("budget") is not None:
        w = [p[1] for p in b.get("weight") or []]
        reached = _num(b.get("forgetting"), "{:+.4f}")
        out.append(f"forgetting budget {b['budget']:g} nats/token: reached {reached} "
                   f"({'within' if b.get('within') else 'over'}); distillation weight "
                   + (f"{w[0]:g} -> max {max(w):.3g} -> {w[-1]:.3g} over {len(w) - 1} measurements" if w else "not set"))
    return [w for line in out for w in textwrap.wrap(line, WIDTH, subsequent_indent="  ")]


def _num(v, fmt: str = "{:.4f}") -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-"
    if isinstance(v, int):   # a count (validation tokens): no decimals
        return f"{v:+,}" if "+" in fmt else f"{v:,}"
    return fmt.format(v) if math.isfinite(v) else str(v)


def _seconds(s) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
