"""`tailorlm eval RUN | CFG [key=value ...]`: the evaluators training uses, on a run's final model
(beside its base model, scored now on the same rows) or on the base model a config names. Overrides
apply to the run's stored config before its model loads, so a run moved to another machine can name
where its base model now is.

The console gets a table: each metric with the split and the number of rows it was scored on (val_loss
on the validation examples, accuracy on the held-out rows: the test split when there is one), base,
tuned and the change; for a classification run its per-class scores and confusion matrix, and no
perplexity (exp of a label's NLL says nothing a classifier's reader can use). `--json` prints the
tuned model's scores as before (same keys), with `base`, `delta` and `scored_on` added.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

HELP = "evaluate a run (against its base model) or a base model on the config's held-out data"
EXAMPLES = """examples:
  tailorlm eval runs/my-run                             the run's final model against its base model
  tailorlm eval runs/my-run --json                      the same as JSON (per-class scores, confusion matrix)
  tailorlm eval runs/my-run data.test=other.jsonl       other held-out data
  tailorlm eval runs/my-run model.path=/models/base     a run whose base model has moved
  tailorlm eval my.yaml                                 the base model the config names"""

HIDDEN = {"val_tokens"}                 # a count: the "scored on" column says what was scored


def add_arguments(p) -> None:
    p.add_argument("target", help="a run directory (evaluates its final/) or a config (evaluates the base model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's or the file's config, e.g. "
                   "model.path=/models/base eval.max_examples=100")
    p.add_argument("--json", action="store_true", help="print the scores as JSON (the tuned model's scores at the "
                   "top level, the base model's under 'base'), not the table")
    p.add_argument("--no-base", action="store_true", help="the run's final model only: no base column or change "
                   "(the base is scored again where overrides change data.* or eval.*: twice the time)")


def eval_command(a) -> int:
    result = evaluate_target(a.target, a.overrides, base=not a.no_base)
    print(json.dumps(as_json(result), indent=1) if a.json else eval_table(result))
    return 0


def evaluate_target(target: str, overrides: list[str], base: bool = True) -> dict:
    """A run directory: its final model, and (`base`) its base model on the same rows; a config file:
    the base model it names. {"what", "scores", "base": scores or None, "scored_on": {metric: (split,
    rows)}, "classification": bool}."""
    from ..config import load_config
    from ..eval.evaluators import EvalContext, evaluate
    from ..eval.specs import owner
    from ..progress import phase
    from ..run import build, open_run, place
    from .privacy import final_step

    p = Path(target)
    opened = None
    if p.is_dir():
        opened = open_run(p, overrides)
        cfg, model, data = opened.cfg, opened.model, opened.data
        step = final_step(p, cfg)
        what = f"{target}: final model" + (f" (step {step})" if step is not None else "")
    else:  # data first: a classifier's head is sized by the data's labels
        cfg = load_config(p, overrides)
        model, tok, data = build(cfg)
        what = f"{target}: the base model {cfg.model.path}"
    device = place(cfg)   # (train.precision resolved for it)
    ctx = EvalContext(cfg, data, device)
    model = model.to(device)
    with phase("evaluation"):
        scores = evaluate(model, ctx)   # (fewshot, retention: step 0 only)
    before, how = base_scores(opened, model, ctx, overrides) if opened is not None and base else (None, "")
    scored = {k: ctx.scored_on(owner(k) or "") for k in {**(before or {}), **scores}}
    return {"what": what + how, "scores": scores, "base": before, "classification": data.fmt == "classification",
            "scored_on": {k: v for k, v in scored.items() if v}}


def rescores(overrides: list[str]) -> bool:
    """Whether the overrides change the rows or the evaluators (data.*, eval.* but its batch size), so
    the scores training kept of the base model are not of these rows."""
    keys = [o.partition("=")[0].strip() for o in overrides]
    return any(k.startswith(("data.", "eval.")) and k != "eval.batch_size" for k in keys)


def base_scores(opened, model, ctx, overrides: list[str]) -> tuple[dict, str]:
    """(the base model's scores, where they come from): those training kept at step 0 when the rows
    are the run's own, else scored now (the method switched off: adapters, prompts; or the base
    folder loaded beside a full fine-tune). A classifier head's base is re-drawn at random on load,
    so only the kept scores are of the head the run started from."""
    from ..eval.evaluators import evaluate
    from ..probes.pair import base_view
    from ..progress import phase
    from ..run.folder import BASE_EVAL

    kept = None if rescores(overrides) else opened.run.base_eval() or (opened.run.summary() or {}).get("base")
    if kept:
        return kept, f", against its base model {ctx.cfg.model.path} as training scored it ({BASE_EVAL})"
    with phase("base model evaluation"), base_view(model, ctx.cfg, ctx.device) as b:
        now = evaluate(b, dataclasses.replace(ctx, base=True))
    return now, f", against its base model {ctx.cfg.model.path}, scored now on the same rows"


def as_json(r: dict) -> dict:
    """The tuned model's scores at the top level (the keys `tailorlm eval` always printed), and beside
    them the base model's, the changes, and where each metric was scored."""
    from ..eval.metrics import deltas

    out = dict(r["scores"])
    if r["base"] is not None:
        out["base"], out["delta"] = r["base"], deltas(r["scores"], r["base"])
    out["scored_on"] = {k: {"split": s, "rows": n} for k, (s, n) in r["scored_on"].items()}
    return out


def _num(v, signed: bool = False) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return ""
    if not math.isfinite(v):
        return str(v)
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def grid(rows: list[list[str]], left: int = 1) -> str:
    """Rows of cells as aligned text: the first `left` columns to the left, the others (numbers) right."""
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, width)))
                     .rstrip() for r in rows)


def score_rows(r: dict) -> list[list[str]]:
    """metric | better | scored on | base | tuned | change | note: one row per number scored."""
    from ..eval.metrics import NOT_FOR_CLASSIFICATION, collapsed, deltas
    from ..eval.specs import find, is_number, owner

    after, before = r["scores"], r["base"]
    hide = HIDDEN | (NOT_FOR_CLASSIFICATION if r["classification"] else set())
    keys = [k for k in dict.fromkeys([*after, *(before or {})]) if k not in hide   # (the base: what tuning must beat)
            and (is_number(after.get(k)) or is_number((before or {}).get(k)) and owner(k) == "fewshot")]
    d, one = deltas(after, before), collapsed(after)
    rows = [["metric", "better", "scored on"] + (["base", "tuned", "change"] if before is not None else ["score"])
            + ["note"]]
    for k in keys:
        s, where = find(k), r["scored_on"].get(k)
        note = ""
        if one and k in ("accuracy", "macro_f1") and before is not None:
            note = f"not a gain: {one!r} for every row"
        elif k == "majority":
            note = "always answering the commonest label"
        cells = [k, {"higher": "higher", "lower": "lower"}.get(s.direction, "") if s else "",
                 f"{where[0]}, {where[1]} rows" if where else ""]
        cells += ([_num(before.get(k)), _num(after.get(k)), _num(d.get(k), True)] if before is not None
                  else [_num(after.get(k))])
        rows.append(cells + [note])
    return rows


def class_rows(after: dict, before: dict | None) -> list[list[str]]:
    """label | rows | predicted | precision | recall | F1 (| base F1 | change): one row per label."""
    conf = after.get("confusion") or {}
    labels, matrix = conf.get("labels") or list(after["per_class"]), conf.get("matrix") or []
    predicted = [sum(row[j] for row in matrix) for j in range(len(labels))] if matrix else [None] * len(labels)
    base = (before or {}).get("per_class") or {}
    rows = [["label", "rows", "predicted", "precision", "recall", "F1"] + (["base F1", "change"] if base else [])]
    for lab, n in zip(labels, predicted):
        c = after["per_class"].get(lab) or {}
        cells = [str(lab), str(c.get("support", "")), "" if n is None else str(n),
                 _num(c.get("precision")), _num(c.get("recall")), _num(c.get("f1"))]
        if base:
            b = (base.get(lab) or {}).get("f1")
            cells += [_num(b), _num(c.get("f1") - b, True) if _num(b) and _num(c.get("f1")) else ""]
        rows.append(cells)
    return rows


def confusion_rows(conf: dict) -> list[list[str]]:
    """The matrix with its labels: rows = true label, columns = predicted."""
    return [["true \\ predicted", *map(str, conf["labels"])]] + [[str(lab), *map(str, row)]
                                                              for lab, row in zip(conf["labels"], conf["matrix"])]


def eval_table(r: dict) -> str:
    """What the console shows: the title, a collapse said first, the scores, per class, the matrix, warnings."""
    from ..eval.metrics import collapsed

    after, before = r["scores"], r["base"]
    held = r["scored_on"].get("accuracy")
    on = f" ({held[0]} split, {held[1]} rows)" if held else ""
    out = [r["what"]]
    if one := collapsed(after):
        out.append(f"COLLAPSED: the model answers {one!r} for every held-out row{on}; its accuracy is that "
                   "label's share, not a skill. Fix: data.balance: sample or weight, or a lower train.lr")
    out += ["", grid(score_rows(r), left=3)]
    if isinstance(after.get("per_class"), dict) and after["per_class"]:
        who = "tuned" if before is not None else "this"
        out += ["", f"per class, {who} model{on}", grid(class_rows(after, before))]
    if isinstance(after.get("confusion"), dict) and after["confusion"].get("matrix"):
        out += ["", f"confusion matrix{on}: rows = true label, columns = predicted",
                grid(confusion_rows(after["confusion"]))]
    if after.get("accuracy_warning"):
        out += ["", f"warning: {after['accuracy_warning']}"]
    if r["classification"]:
        out.append("(val_loss: the mean cross-entropy of the true label on the validation split; a classifier "
                   "gets no perplexity)")
    return "\n".join(out)
