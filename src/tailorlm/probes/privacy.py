"""The privacy probe: canary exposure, discoverable extraction and membership inference, on the tuned
model and on the base model (pair.base_view) over the same inputs.

`measure` reads one model's raw figures; `privacy_probe` pairs base and tuned into the rows of
RUN/probes/privacy.json (`tailorlm privacy RUN`); privacy_eval.py holds the evaluators built on the
same functions. Formulas: canaries.py, extraction.py, membership.py.

"Training" examples are the rows the tuned weights trained on: `split_by_training` replays the run's
data order up to the step its final/ holds (membership.trained_rows). "Held-out" examples are the rows
it never trained on: validation and test, and the training rows its steps never reached.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.tokenize import IGNORE, tokenize_rows
from .canaries import Canaries, exposure_extrapolated, exposure_rank, secret_examples, user_examples
from .extraction import extraction_items, extraction_rows
from .membership import membership_rows, trained_rows
from .pair import base_view
from .privacy_scoring import example_nll, greedy_matches, sample, shared_head
from .stats import paired_change
from .verdict import verdict

# the figures a verdict is said for: every one is worse when it rises (more memorised, a sharper
# attack); the skew-normal exposure and the TPR rows are other readings of a judged row, shown only
SHOWN_ONLY = ("canary exposure (skew-normal)", "TPR at ")


def held_out_examples(data, cfg) -> list:
    """Validation examples, and the test rows tokenized the same way: never trained on."""
    if not data.test_rows or cfg.model.task != "causal_lm":
        return list(data.val)
    test, _ = tokenize_rows(data.test_rows, data.fmt, data.formatter.tok, cfg.data, data.labels, data.formatter)
    return list(data.val) + test


def order_size(data, cfg) -> int:
    """How many examples the run's data order shuffled: data.train, plus the canary rows the run
    appended (insert_canaries) when `data` was rebuilt without them (`tailorlm privacy`, `eval`)."""
    cc = cfg.privacy.canaries
    if "canaries" in data.report or not cc.count or cfg.model.task != "causal_lm":
        return len(data.train)
    return len(data.train) + cc.count * sum(cc.repetitions)


def split_by_training(data, cfg, step: int | None, held: list) -> tuple[list[int], list, dict]:
    """(members, non-members, counts): the indices into data.train of the user's examples the run's
    first `step` steps trained on; the held-out examples plus the user's training examples those
    steps never reached. step None (the order is unknown): every training example is a member."""
    user = user_examples(data)                              # canary rows sit after the user's
    if step is None:
        return list(range(len(user))), list(held), {"training_rows": len(user), "trained_rows": None}
    seen = trained_rows(order_size(data, cfg), cfg.train, step, data.groups)
    members = [i for i in range(len(user)) if i in seen]
    unseen = [e for i, e in enumerate(user) if i not in seen]
    return members, list(held) + unseen, {"training_rows": len(user), "trained_rows": len(members),
                                          "never_reached": len(unseen)}


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


def measure_examples(model, cfg, tok, tr: list, ho: list, *, k: int, m: int, device: str, head: int | None = None,
                     window: str = "trained", extract: bool = True, nll: bool = True) -> dict:
    """One model's per-token NLL and extraction matches (each skipped when its flag is off) on the
    training examples `tr` and held-out examples `ho` (the same ones for every model compared)."""
    kw = dict(pad_id=tok.pad_token_id, device=device, batch_size=cfg.eval.batch_size)
    out = {"extraction_head": shared_head(tr + ho) if head is None else head}
    if nll:
        s, c = example_nll(model, tr + ho, precision=cfg.train.precision, **kw)
        per_token = s / np.maximum(c, 1)                      # (train + held,) mean NLL per target token
        out["nll_train"], out["nll_held"] = per_token[:len(tr)], per_token[len(tr):]
    for name, exs in (("extract_train", tr), ("extract_held", ho)):
        p, t = extraction_items(exs, out["extraction_head"], k, m, window) if extract else ([], [])
        out[name] = greedy_matches(model, p, t, precision=cfg.train.precision, **kw) if p else np.zeros(0)
    return out


def measure(model, cfg, data, canaries: Canaries | None, tr: list, ho: list, *, k: int, m: int, device: str,
            references: int | None = None, window: str = "trained") -> dict:
    out = measure_canaries(model, cfg, data.formatter.tok, canaries, device, references) if canaries else {}
    if cfg.model.task == "causal_lm":
        out.update(measure_examples(model, cfg, data.formatter.tok, tr, ho, k=k, m=m, device=device, window=window))
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
                  references: int | None = None, step: int | None = None,
                  window: str = "trained") -> tuple[list[dict], list[str], dict]:
    """(rows, warnings, extra) for RUN/probes/privacy.json: every figure for base and tuned. `step`:
    the step the tuned weights hold (the members are the rows steps 1..step trained on); None when
    unknown (every training row a member, said in a warning). `window`: extraction.py."""
    members, non, counts = split_by_training(data, cfg, step, held_out_examples(data, cfg))
    user = user_examples(data)
    tr, ho = [user[i] for i in sample(members, n, cfg.train.seed)], sample(non, n, cfg.train.seed)
    kw = dict(k=k, m=m, device=device, references=references, window=window)
    tuned = measure(model, cfg, data, canaries, tr, ho, **kw)
    with base_view(model, cfg, device) as base_model:
        base = measure(base_model, cfg, data, canaries, tr, ho, **kw)
    rows, warnings, extra = [], [], {"k": k, "m": m, "window": window, "step": step}
    if canaries is not None:
        rows += canary_rows(canaries, base, tuned)
        extra["canaries"] = {"pattern": canaries.pattern, "space": canaries.space, "references":
                             len(tuned["canary_nll"]) - len(canaries.inserted) - len(canaries.never)}
    if "nll_train" in tuned:
        rows += _example_rows(base, tuned, k, m, window, warnings, extra)
        extra.setdefault("membership", {}).update(counts)
        if step is None:
            warnings.append("membership: the step the tuned weights hold is unknown (no summary.json), so every "
                            "training row counts as a member, trained on or not")
    return judge(rows), warnings, extra


def judge(rows: list[dict]) -> list[dict]:
    """Each judged row (not SHOWN_ONLY) with its `verdict`: a significant rise is worse, a significant
    fall better (probes/verdict.py, threshold 0: the paired 95% interval alone), in place."""
    for r in rows:
        if not r["metric"].startswith(SHOWN_ONLY):
            r["verdict"] = verdict(r, 1)
    return rows


def _example_rows(base: dict, tuned: dict, k: int, m: int, window: str, warnings: list, extra: dict) -> list[dict]:
    """Extraction and membership rows from both models' example figures; warnings and extra in place."""
    rows = []
    if not tuned["nll_train"].size:
        warnings.append("membership and extraction: the run trained on none of the training rows")
        return rows
    if len(tuned["extract_train"]) and len(tuned["extract_held"]):
        rows += extraction_rows({"base": base["extract_train"], "tuned": tuned["extract_train"]},
                                {"base": base["extract_held"], "tuned": tuned["extract_held"]})
    else:
        where = "trained tokens (response, label) in a row" if window == "trained" else "tokens"
        warnings.append(f"extraction: no example has {m} {where} after {tuned['extraction_head']} + k={k} tokens. "
                        "Fix: smaller --k / --m")
    mrows, raw = membership_rows((tuned["nll_train"], tuned["nll_held"]), (base["nll_train"], base["nll_held"]))
    rows += mrows
    extra["membership"] = raw
    extra["extraction"] = {"shared_head_tokens": tuned["extraction_head"], "train": len(tuned["extract_train"]),
                           "held_out": len(tuned["extract_held"])}
    if raw["void"]:
        warnings.append(raw["void"])
    if raw["non_members"] < 1000:
        warnings.append(f"TPR at 0.1% FPR with {raw['non_members']} held-out examples means scoring below every "
                        "one of them; 1000 or more are needed to resolve it")
    return rows
