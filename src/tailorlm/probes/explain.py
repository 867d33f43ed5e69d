"""`tailorlm explain`'s engine: a run's prediction on some texts, why (token attributions of the
tuned model and of the base model toward the same answer), and what tuning changed there (diff).

The answer explained is the tuned model's: its most likely label word (a classification run, scored
as evaluation scores it: eval.tasks.score_candidates), its head's class (sequence classification),
or its greedy next tokens; `target` replaces it. The diff scores that answer, or the file's own
reference (its label or response) where the row has one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.formats import Formatter
from ..errors import ConfigError
from ..eval.tasks import score_candidates
from ..run import RunDir, open_run
from .attribution import Attribution, attribute
from .diff import diff
from .explain_html import fragment
from .explain_text import LOGP
from .inputs import Rendered, render
from .pair import base_view
from .stats import paired_change
from .store import write_probe
from .verdict import SAME, verdict

IG_TOLERANCE = 0.05   # |delta| / |F(x) - F(x')| above this: the integral is not converged


def run_format(run_dir: Path, cfg) -> tuple[str, list[str] | None]:
    """(data format, labels) the run trained with: the stored config, else what its summary recorded."""
    fmt, labels = cfg.data.format, cfg.data.labels
    summary = RunDir.at(run_dir).summary_file
    if (fmt == "auto" or (labels is None and fmt in ("auto", "classification"))) and summary.is_file():
        data = json.loads(summary.read_text()).get("data", {})
        fmt = data.get("format", fmt) if fmt == "auto" else fmt
        labels = labels or data.get("labels")
    return ("text" if fmt == "auto" else fmt), labels


def _predict(model, tok, r: Rendered, fm: Formatter, task: str, n_tokens: int) -> tuple[list[int] | int, str, dict]:
    """(target for attribution, its text, the scores behind it) of one model on one prompt."""
    dev = next(model.parameters()).device
    if task == "sequence_classification":
        with torch.no_grad():
            lp = model(input_ids=torch.tensor([r.ids], device=dev)).logits.float().log_softmax(-1)[0]
        cls = int(lp.argmax())
        return cls, fm.labels[cls], dict(zip(fm.labels, lp.exp().tolist()))
    if fm.fmt == "classification" and fm.labels:
        cands = [tok(lab, add_special_tokens=False)["input_ids"] for lab in fm.labels]
        s = score_candidates(model, [r.ids], cands, pad_id=tok.pad_token_id, device=str(dev), precision="fp32",
                             batch_size=1)[0]
        best = int(s.argmax())
        return cands[best], fm.labels[best], dict(zip(fm.labels, s.softmax(-1).tolist()))
    out = greedy_ids(model, tok, r.ids, n_tokens)
    return out, tok.decode(out), {}


@torch.no_grad()
def greedy_ids(model, tok, ids: list[int], n: int) -> list[int]:
    """The first n greedy tokens after ids, up to (not including) the end of the turn; EOS alone if
    the model stops at once."""
    dev = next(model.parameters()).device
    out = model.generate(input_ids=torch.tensor([ids], device=dev), attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                         device=dev), max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)[0, len(ids):]
    stops = {tok.eos_token_id, tok.pad_token_id} - {None}
    kept = out.tolist()
    cut = next((i for i, t in enumerate(kept) if t in stops), len(kept))
    return kept[:cut] or kept[:1]


def explain(run: str | Path, inputs: list[tuple[str, str | None]], *, method: str = "ablation",
            target: str | None = None, overrides: list[str] | None = None, attribute_first: int = 5,
            n_steps: int = 128, n_samples: int = 8, max_new_tokens: int = 24, target_tokens: int = 8,
            write: bool = True) -> dict:
    """Explain inputs [(text, reference answer or None)] on a run's final model; writes
    RUN/probes/explain.json (with the HTML fragment) unless write is False. Returns that record."""
    opened = open_run(run, overrides)
    run_dir, cfg, model, tok = opened.run.path, opened.cfg, opened.model, opened.tokenizer
    fmt, labels = run_format(run_dir, cfg)
    task = cfg.model.task
    fm = Formatter(fmt, tok, cfg.data, labels)
    opened.on_device().eval()
    rendered = [render(fm, fmt, text, encoder=task == "sequence_classification") for text, _ in inputs]
    items = []
    for i, r in enumerate(rendered):
        item = _explain_one(model, cfg, tok, fm, task, r, method if i < attribute_first else None, target,
                            n_steps=n_steps, n_samples=n_samples, target_tokens=target_tokens)
        item["reference"] = inputs[i][1]
        items.append(item)
    if task == "causal_lm":
        answers = [tok(ref, add_special_tokens=False)["input_ids"] if ref else it["answer_ids"]
                   for (_, ref), it in zip(inputs, items)]
        for it, d in zip(items, diff(model, cfg, tok, rendered, answers, max_new_tokens=max_new_tokens)):
            it["diff"] = d.to_dict()
    record = {"run": str(run_dir), "method": method, "format": fmt, "task": task, "inputs": items}
    rows, warnings = summary_rows(items)
    record["rows"], record["warnings"] = rows, warnings
    record["html"] = fragment(record)
    if write:
        record["path"] = str(write_probe(run_dir, "explain", title="Explanations: why the tuned model answers "
                                         "as it does, and what tuning changed", rows=rows, warnings=warnings,
                                         html=record["html"], extra={"method": method, "inputs": items}))
    return record


def _explain_one(model, cfg, tok, fm, task, r: Rendered, method: str | None, target: str | None, *,
                 n_steps: int, n_samples: int, target_tokens: int) -> dict:
    """The tuned and the base model's answers on one prompt, and (with a method) the attributions
    of both toward the tuned model's answer (or `target`)."""
    tgt, text, probs = _predict(model, tok, r, fm, task, target_tokens)
    if target is not None:
        if task == "sequence_classification" and target not in fm.labels:
            raise ConfigError(f"--target {target!r} is not one of the classifier's labels {fm.labels}. Fix: name one")
        tgt, text, probs = (fm.labels.index(target) if task == "sequence_classification" else
                            tok(target, add_special_tokens=False)["input_ids"]), target, {}
    with base_view(model, cfg) as base:
        _, base_text, base_probs = _predict(base, tok, r, fm, task, target_tokens)
        base_attr = _attr(base, tok, r, tgt, method, n_steps, n_samples)
    tuned_attr = _attr(model, tok, r, tgt, method, n_steps, n_samples)
    return {"text": r.content, "pieces": r.pieces, "answer": text, "answer_ids": tgt if isinstance(tgt, list) else [],
            "base_answer": base_text, "probs": {"tuned": probs, "base": base_probs},
            "attribution": None if method is None else {"tuned": tuned_attr.__dict__, "base": base_attr.__dict__}}


def _attr(model, tok, r, tgt, method, n_steps, n_samples) -> Attribution | None:
    if method is None:
        return None
    return attribute(model, tok, r, tgt, method, n_steps=n_steps, n_samples=n_samples)


REFERENCE_LOGP = "log p(reference answer)"      # the file's own answers; else LOGP, the tuned model's answer
TEXT_LOGP = "log p per token of the text"        # how likely the user's own text is: a fall is forgetting
RIGHT = "answer is the reference"                # classification inputs that all carry their label


def _row(metric: str, base, tuned, up: int | None) -> dict:
    """One table row with n and its verdict; `up`: which way is worse (probes/verdict.py; None: neither)."""
    r = {"metric": metric, "n": len(base), **paired_change(base, tuned), "up": up}
    r["verdict"] = verdict(r, up)
    return r


def summary_rows(items: list[dict]) -> tuple[list[dict], list[str]]:
    """The probe's table: base vs tuned over the inputs, with paired bootstrap intervals and n; each
    row's verdict (better / worse / changed / no significant change, probes/verdict.py)."""
    rows, warnings = [], []
    diffs = [it["diff"] for it in items if it.get("diff")]
    scored = all(it.get("reference") is not None for it in items)
    labelled = scored and all(it["probs"]["tuned"] for it in items)   # (label words: a classification run)
    if diffs:
        ans = [(sum(b for b, g in zip(d["logp_base"], d["region"]) if g == "answer"),
                sum(t for t, g in zip(d["logp_tuned"], d["region"]) if g == "answer")) for d in diffs]
        text = [(np.mean([b for b, g in zip(d["logp_base"], d["region"]) if g == "text"]),
                 np.mean([t for t, g in zip(d["logp_tuned"], d["region"]) if g == "text"])) for d in diffs]
        if any("answer" in d["region"] for d in diffs):   # a reference answer: more likely is better
            rows.append(_row(REFERENCE_LOGP, *zip(*ans), up=-1) if scored else _row(LOGP, *zip(*ans), None))
        rows.append(_row(TEXT_LOGP, *zip(*text), up=-1))
        rows.append(_row("KL(base || tuned) per token", [0.0] * len(diffs), [np.mean(d["kl"]) for d in diffs], None))
        rows.append(_row("greedy output differs", [0.0] * len(diffs), [float(d["greedy_differs"]) for d in diffs],
                         None))
    rows.append(_row("answer differs from the base's", [0.0] * len(items),
                     [float(it["answer"] != it["base_answer"]) for it in items], None))
    if labelled:
        rows.append(_row(RIGHT, [float(it["base_answer"] == it["reference"]) for it in items],
                         [float(it["answer"] == it["reference"]) for it in items], up=-1))
    if len(items) < 2:
        for row in rows:
            row["significant"], row["verdict"] = False, SAME
        warnings.append("one input: no confidence interval (explain a --file of inputs for one)")
    for it in items:
        a = (it.get("attribution") or {}).get("tuned") or {}
        if a.get("delta") is not None and abs(a["delta"]) > IG_TOLERANCE * abs(a["target_logp"] - a["baseline_logp"]):
            warnings.append(f"integrated gradients did not converge on {it['text'][:40]!r} (delta {a['delta']:.3g}): "
                            "raise --steps")
    return rows, warnings
