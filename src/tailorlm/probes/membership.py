"""Membership inference: can one tell the training examples from held-out ones by the model's loss?

    loss attack       score(x) = NLL_model(x), per target token (Yeom et al. 2018)
    reference attack  score(x) = NLL_tuned(x) - NLL_base(x): the base model as the reference, which
                      removes how hard x is in itself (Carlini et al. 2022, "Membership inference
                      attacks from first principles"; Mireshghallah et al. 2022, arXiv 2205.12506)

A lower score says "member". AUC = P(score(member) < score(non-member)) + P(tie) / 2, the
Mann-Whitney U statistic over members x non-members; 0.5 is chance. TPR at a low FPR (1%, 0.1%) is
what an attacker who must rarely be wrong achieves (Carlini et al. 2022 §3). Intervals are
percentile bootstraps over examples (stats.bootstrap). The loss attack on the untouched base model is
the control: it never saw either set, so its interval should contain 0.5.
"""
from __future__ import annotations

import numpy as np

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
    """The share of members flagged by the threshold that flags at most fpr of the non-members:
    flag score < the (floor(fpr * n) + 1)-th lowest non-member score. With fewer than 1/fpr
    non-members that is 'below every non-member', the strictest reading."""
    if len(member) == 0 or len(non) == 0:
        return float("nan")
    s = np.sort(non)
    threshold = s[min(int(fpr * len(s)), len(s) - 1)]
    return float(np.mean(member < threshold))


def _by_items(score: np.ndarray, is_member: np.ndarray, fn) -> callable:
    """stat(indices) for stats.bootstrap: fn(member scores, non-member scores) on the resampled items."""
    return lambda i: fn(score[i][is_member[i]], score[i][~is_member[i]])


def membership_rows(tuned: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray], *,
                    rounds: int = 1000, seed: int = 0) -> tuple[list[dict], dict]:
    """Rows for RUN/probes/privacy.json and the raw figures. `tuned` and `base` are (member NLL,
    non-member NLL) per target token, on the same examples."""
    tm, tn = (np.asarray(x, dtype=float) for x in tuned)
    bm, bn = (np.asarray(x, dtype=float) for x in base)
    is_member = np.r_[np.ones(len(tm), bool), np.zeros(len(tn), bool)]
    t_all, b_all = np.r_[tm, tn], np.r_[bm, bn]
    ref = t_all - b_all                                                                 # the reference attack's score
    n, kw = len(is_member), dict(rounds=rounds, seed=seed)
    ref_auc = bootstrap(_by_items(ref, is_member, auc), n, **kw)
    rows = [{"metric": "MIA AUC (NLL_tuned - NLL_base)", "group": "reference attack", "base": 0.5,
             "tuned": ref_auc["value"], "change": ref_auc["value"] - 0.5, "lo": ref_auc["lo"] - 0.5,
             "hi": ref_auc["hi"] - 0.5, "significant": bool(ref_auc["lo"] > 0.5 or ref_auc["hi"] < 0.5),
             "tuned_lo": ref_auc["lo"], "tuned_hi": ref_auc["hi"]}]
    for f in FPRS:
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
    raw = {"members": int(len(tm)), "non_members": int(len(tn)), "reference_auc": ref_auc,
           "loss_auc_base": base_auc, "loss_auc_tuned": tuned_auc}
    return rows, raw
