"""The privacy probe: canary exposure, discoverable extraction and membership inference, on the tuned
model and on the base model (pair.base_view) over the same inputs.

`measure` reads one model's raw figures; `privacy_probe` pairs base and tuned into the rows of
RUN/probes/privacy.json (`tailorlm privacy RUN`); privacy_eval.py holds the evaluators built on the
same functions. Formulas: canaries.py, extraction.py, membership.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.tokenize import IGNORE, tokenize_rows
from .canaries import Canaries, exposure_extrapolated, exposure_rank, secret_examples, user_examples
from .extraction import extraction_items, extraction_rows
from .membership import membership_rows
from .pair import base_view
from .privacy_scoring import example_nll, greedy_matches, sample, shared_head
from .stats import paired_change


def held_out_examples(data, cfg) -> list:
    """Validation examples, and the test rows tokenized the same way: never trained on."""
    if not data.test_rows or cfg.model.task != "causal_lm":
        return list(data.val)
    test, _ = tokenize_rows(data.test_rows, data.fmt, data.formatter.tok, cfg.data, data.labels, data.formatter)
    return list(data.val) + test


def _secret_split(ex) -> tuple[list[int], list[int]]:
    """(the shared prefix's tokens, the secret's tokens) of a secret example."""
    n = next(i for i, t in enumerate(ex.labels) if t != IGNORE)
    return ex.input_ids[:n], ex.input_ids[n:]


def measure_canaries(model, cfg, tok, canaries: Canaries, device: str, references: int | None = None) -> dict:
    """One model's canary figures: NLL of [inserted, never, references[:references]] secrets given the
    prefix, and whether greedy decoding after the prefix writes each inserted and never secret."""
    kw = dict(pad_id=tok.pad_token_id, device=device, batch_size=cfg.eval.batch_size)
    secrets = [c["text"] for c in canaries.inserted] + canaries.never
    ex = secret_examples(canaries, secrets + canaries.references[:references], tok)
    prompts, targets = zip(*(_secret_split(e) for e in ex[:len(secrets)]))
    return {"canary_nll": example_nll(model, ex, precision=cfg.train.precision, **kw)[0],
            "canary_extracted": greedy_matches(model, list(prompts), list(targets), precision=cfg.train.precision,
                                               **kw)}


def measure_examples(model, cfg, data, *, k: int, m: int, n: int | None, device: str, held: list | None = None,
                     extract: bool = True, nll: bool = True) -> dict:
    """One model's per-token NLL and extraction matches (each skipped when its flag is off) on a seeded
    sample of n training and n held-out examples (the same sample for every model and evaluation)."""
    tok, seed = data.formatter.tok, cfg.train.seed
    kw = dict(pad_id=tok.pad_token_id, device=device, batch_size=cfg.eval.batch_size)
    tr = sample(user_examples(data), n, seed)
    ho = sample(held if held is not None else held_out_examples(data, cfg), n, seed)
    out = {"extraction_head": shared_head(tr + ho)}
    if nll:
        s, c = example_nll(model, tr + ho, precision=cfg.train.precision, **kw)
        per_token = s / np.maximum(c, 1)                      # (train + held,) mean NLL per target token
        out["nll_train"], out["nll_held"] = per_token[:len(tr)], per_token[len(tr):]
    for name, exs in (("extract_train", tr), ("extract_held", ho)):
        p, t = extraction_items(exs, out["extraction_head"], k, m) if extract else ([], [])
        out[name] = greedy_matches(model, p, t, precision=cfg.train.precision, **kw) if p else np.zeros(0)
    return out


def measure(model, cfg, data, canaries: Canaries | None, *, k: int, m: int, n: int | None, device: str,
            references: int | None = None, held: list | None = None) -> dict:
    out = measure_canaries(model, cfg, data.formatter.tok, canaries, device, references) if canaries else {}
    if cfg.model.task == "causal_lm":
        out.update(measure_examples(model, cfg, data, k=k, m=m, n=n, device=device, held=held))
    return out


def exposures(c: Canaries, nll: np.ndarray) -> dict:
    """Per secret: exposure by rank and extrapolated, from NLL over [inserted, never, references]."""
    n = len(c.inserted) + len(c.never)
    ref = nll[n:]
    return {"rank": exposure_rank(nll[:n], ref), "extrapolated": exposure_extrapolated(nll[:n], ref, c.space)}


def canary_rows(c: Canaries, base: dict, tuned: dict, rounds: int = 1000) -> list[dict]:
    eb, et = exposures(c, base["canary_nll"]), exposures(c, tuned["canary_nll"])
    reps = np.array([x["repetitions"] for x in c.inserted] + [0] * len(c.never))   # 0 = never inserted
    n_ref = len(base["canary_nll"]) - len(reps)
    rows = []
    for level in c.levels() + [0]:
        pick, group = reps == level, f"{level}x" if level else "never inserted"
        for key, metric in (("rank", f"canary exposure (rank among {n_ref}, max {math.log2(n_ref + 1):.2f})"),
                            ("extrapolated", "canary exposure (skew-normal)")):
            ci = paired_change(eb[key][pick], et[key][pick], rounds=rounds)
            rows.append({"metric": metric, "group": group, **ci, "n": int(pick.sum())})
        ci = paired_change(base["canary_extracted"][pick], tuned["canary_extracted"][pick], rounds=rounds)
        rows.append({"metric": "canary extracted (greedy)", "group": group, **ci, "n": int(pick.sum())})
    return rows


def privacy_probe(model, cfg, data, canaries: Canaries | None, *, k: int, m: int, n: int | None, device: str,
                  references: int | None = None) -> tuple[list[dict], list[str], dict]:
    """(rows, warnings, extra) for RUN/probes/privacy.json: every figure for base and tuned."""
    held = held_out_examples(data, cfg)
    kw = dict(k=k, m=m, n=n, device=device, references=references, held=held)
    tuned = measure(model, cfg, data, canaries, **kw)
    with base_view(model, cfg, device) as base_model:
        base = measure(base_model, cfg, data, canaries, **kw)
    rows, warnings, extra = [], [], {"k": k, "m": m}
    if canaries is not None:
        rows += canary_rows(canaries, base, tuned)
        extra["canaries"] = {"pattern": canaries.pattern, "space": canaries.space, "references":
                             len(tuned["canary_nll"]) - len(canaries.inserted) - len(canaries.never)}
    if "nll_train" in tuned:
        if len(tuned["extract_train"]) and len(tuned["extract_held"]):
            rows += extraction_rows({"base": base["extract_train"], "tuned": tuned["extract_train"]},
                                    {"base": base["extract_held"], "tuned": tuned["extract_held"]})
        else:
            warnings.append(f"extraction: no example has {tuned['extraction_head']} + k={k} + m={m} tokens. "
                            "Fix: smaller --k / --m")
        mrows, raw = membership_rows((tuned["nll_train"], tuned["nll_held"]), (base["nll_train"], base["nll_held"]))
        rows += mrows
        extra["membership"] = raw
        extra["extraction"] = {"shared_head_tokens": tuned["extraction_head"], "train": len(tuned["extract_train"]),
                               "held_out": len(tuned["extract_held"])}
        if raw["non_members"] < 1000:
            warnings.append(f"TPR at 0.1% FPR with {raw['non_members']} held-out examples means scoring below every "
                            "one of them; 1000 or more are needed to resolve it")
    return rows, warnings, extra
