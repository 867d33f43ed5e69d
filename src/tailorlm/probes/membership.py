"""Membership inference: can one tell the training examples from held-out ones by the model's loss?

    loss attack       score(x) = NLL_model(x), per target token (Yeom et al. 2018)
    reference attack  score(x) = NLL_tuned(x) - NLL_base(x): the base model as the reference, which
                      removes how hard x is in itself (Carlini et al. 2022, "Membership inference
                      attacks from first principles"; Mireshghallah et al. 2022, arXiv 2205.12506)

A lower score says "member". AUC = P(score(member) < score(non-member)) + P(tie) / 2, the
Mann-Whitney U statistic over members x non-members; 0.5 is chance. TPR at a low FPR (1%, 0.1%) is
what an attacker who must rarely be wrong achieves (Carlini et al. 2022 §3), read off the ROC at
FPR = f (a group of tied scores is one straight segment of it, as in the AUC). scikit-learn's
`roc_auc_score` and `roc_curve` are the reference (tests/test_privacy_reference.py). Intervals are
percentile bootstraps over examples (stats.bootstrap).

Members are rows the model trained on: `trained_rows` replays the run's data order up to its final
step (a 20-step run of 8 rows a step saw 160 rows, not the whole file). The loss attack on the
untouched base model is the control: it saw neither side, so its interval must contain 0.5; when it
does not, the two samples differ in themselves and the result is void (nothing is called a leak).
"""
from __future__ import annotations

import numpy as np

from ..data.batching import Order
from .stats import bootstrap

FPRS = (0.01, 0.001)


def auc(member: np.ndarray, non: np.ndarray) -> float:
    """Mann-Whitney AUC that members score lower, ties half (O(n log n) by sorting the non-members)."""
    if len(member) == 0 or len(non) == 0:
        return float("nan")
    s = np.sort(non)
    above = len(s) - np.searchsorted(s, member, side="right")                      # non-members scoring higher
    ties = np.searchsorted(s, member, side="right") - np.searchsorted(s, member, side="left")
    return float((above + 0.5 * ties).sum() / (len(member) * len(non)))


def tpr_at_fpr(member: np.ndarray, non: np.ndarray, fpr: float) -> float:
    """The ROC's true-positive rate at false-positive rate `fpr`: flag scores below t, the
    (floor(fpr * n) + 1)-th lowest non-member score, and the share lam of the scores equal to t that
    brings the non-members flagged to fpr * n exactly:
        TPR = (#{member < t} + lam #{member == t}) / n_member,  lam = (fpr n - #{non < t}) / #{non == t}
    Without ties lam multiplies no member: the best ROC point at or left of fpr. With fewer than
    1/fpr non-members that is 'below every non-member', the strictest reading."""
    if len(member) == 0 or len(non) == 0:
        return float("nan")
    s = np.sort(non)
    t = s[min(int(fpr * len(s)), len(s) - 1)]
    below, tied = np.searchsorted(s, t, side="left"), np.searchsorted(s, t, side="right") - np.searchsorted(s, t)
    lam = min(max((fpr * len(s) - below) / tied, 0.0), 1.0)
    return float((np.sum(member < t) + lam * np.sum(member == t)) / len(member))


def trained_rows(n_rows: int, train_cfg, step: int, groups: list[int] | None = None) -> set[int]:
    """Indices into the run's training examples (canary rows included: the order counts them) that its
    first `step` optimizer steps trained on. The run's data order (data.batching.Order) is a seeded
    stream; the step after s steps takes positions [s * grad_accum * batch_size, (s + 1) * ...) over
    all processes, so steps 1..step took positions [0, P), P = step * grad_accum * batch_size. Read one
    epoch (n_rows positions) at a time; stop once every row is in."""
    order = Order(n_rows, n_rows, train_cfg.seed, groups=groups)   # micro-batch e = epoch e
    todo, seen, e = step * train_cfg.grad_accum * train_cfg.batch_size, set(), 0
    while todo > 0 and len(seen) < n_rows:
        seen.update(order.micro_batch(e)[:todo])
        todo, e = todo - n_rows, e + 1
    return seen


def _by_items(score: np.ndarray, is_member: np.ndarray, fn) -> callable:
    """stat(indices) for stats.bootstrap: fn(member scores, non-member scores) on the resampled items."""
    return lambda i: fn(score[i][is_member[i]], score[i][~is_member[i]])


def membership_rows(tuned: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray], *,
                    rounds: int = 1000, seed: int = 0) -> tuple[list[dict], dict]:
    """Rows for RUN/probes/privacy.json and the raw figures. `tuned` and `base` are (member NLL,
    non-member NLL) per target token, on the same examples. raw["void"] is the reason no row may
    claim a leak (the base control's interval excludes 0.5), else None."""
    tm, tn = (np.asarray(x, dtype=float) for x in tuned)
    bm, bn = (np.asarray(x, dtype=float) for x in base)
    is_member = np.r_[np.ones(len(tm), bool), np.zeros(len(tn), bool)]
    t_all, b_all = np.r_[tm, tn], np.r_[bm, bn]                                       # (members + non,)
    ref = t_all - b_all                                                                 # the reference attack's score
    n, kw = len(is_member), dict(rounds=rounds, seed=seed)
    ref_auc = bootstrap(_by_items(ref, is_member, auc), n, **kw)
    rows = [{"metric": "MIA AUC (NLL_tuned - NLL_base)", "group": "reference attack", "base": 0.5,
             "tuned": ref_auc["value"], "change": ref_auc["value"] - 0.5, "lo": ref_auc["lo"] - 0.5,
             "hi": ref_auc["hi"] - 0.5, "significant": bool(ref_auc["lo"] > 0.5 or ref_auc["hi"] < 0.5),
             "tuned_lo": ref_auc["lo"], "tuned_hi": ref_auc["hi"]}]
    for f in FPRS:   # chance: an attack without signal flags members as often as non-members, TPR = FPR
        ci = bootstrap(_by_items(ref, is_member, lambda m, x, f=f: tpr_at_fpr(m, x, f)), n, **kw)
        rows.append({"metric": f"TPR at {f:.1%} FPR", "group": "reference attack", "base": f, "tuned": ci["value"],
                     "change": ci["value"] - f, "lo": ci["lo"] - f, "hi": ci["hi"] - f,
                     "significant": bool(ci["lo"] > f), "tuned_lo": ci["lo"], "tuned_hi": ci["hi"]})
    base_auc = bootstrap(_by_items(b_all, is_member, auc), n, **kw)
    tuned_auc = bootstrap(_by_items(t_all, is_member, auc), n, **kw)
    diff = bootstrap(lambda i: _by_items(t_all, is_member, auc)(i) - _by_items(b_all, is_member, auc)(i), n, **kw)
    rows.append({"metric": "MIA AUC (NLL alone)", "group": "loss attack", "base": base_auc["value"],
                 "tuned": tuned_auc["value"], "change": diff["value"], "lo": diff["lo"], "hi": diff["hi"],
                 "significant": bool(diff["lo"] > 0 or diff["hi"] < 0), "base_lo": base_auc["lo"],
                 "base_hi": base_auc["hi"], "tuned_lo": tuned_auc["lo"], "tuned_hi": tuned_auc["hi"]})
    void = control_void(base_auc)
    if void:
        for r in rows:
            r["significant"], r["void"] = False, True
    raw = {"members": int(len(tm)), "non_members": int(len(tn)), "reference_auc": ref_auc,
           "loss_auc_base": base_auc, "loss_auc_tuned": tuned_auc, "void": void}
    return rows, raw


def control_void(base_auc: dict) -> str | None:
    """Why membership inference says nothing here, or None: the base model never saw either side, so
    its loss attack must be at chance; an interval that excludes 0.5 says the member and non-member
    samples differ in themselves (other sources, lengths, topics), and any 'leak' may be that."""
    lo, hi = base_auc["lo"], base_auc["hi"]
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0.5 <= hi:
        return None
    return (f"membership inference is void: the base model, which saw neither side, tells members from "
            f"non-members (loss-attack AUC {base_auc['value']:.3f} [{lo:.3f}, {hi:.3f}] excludes 0.5), so the two "
            "samples differ in themselves and no leak is claimed. Fix: draw members and non-members from the same "
            "data (a held-out split of the training file)")
