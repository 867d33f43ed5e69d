"""Label balance check for classification data.

An imbalanced data set makes accuracy flatter the model: if 42% of tweets are negative, always
answering "negative" scores 0.42. The check reports each split's label counts and the
majority-class baseline - the accuracy a fine-tuned classifier has to beat to have learned
anything - and, for val/test, the baseline of a constant predictor fitted on train. It warns on
severe imbalance, on a single label, on labels of the label set that never occur in train, and on
val/test labels train never shows (the model cannot learn them).
"""
from __future__ import annotations

from collections import Counter

from .report import INFO, WARNING, Finding
from .schema import RowSchema

CHECK = "labels"
IMBALANCE_INFO = 1.5     # majority/minority ratio worth mentioning
IMBALANCE_WARN = 10.0    # ... and worth a warning: the minority class barely gets trained


def check_labels(rows: list[dict], layout: RowSchema, labels: list | None = None) -> tuple[list[Finding], dict]:
    if layout.fmt != "classification":
        return [], {}
    findings: list[Finding] = []
    splits = list(dict.fromkeys(r["_split"] for r in rows))
    counts = {s: Counter() for s in splits}
    files = {}
    for r in rows:
        counts[r["_split"]][str(layout.get(r, "label"))] += 1
        files.setdefault(r["_split"], r["_file"])
    stats: dict = {}
    train = splits[0] if splits else None
    train_major = counts[train].most_common(1)[0][0] if train and counts[train] else None
    for split in splits:
        c = counts[split]
        total = sum(c.values())
        if not total:
            continue
        major, n_major = c.most_common(1)[0]
        n_minor = min(c.values())
        s = {"counts": dict(c.most_common()), "total": total, "majority": major,
             "majority_baseline": round(n_major / total, 4),
             "imbalance_ratio": round(n_major / n_minor, 2)}
        if split != train and train_major is not None:
            s["train_majority_baseline"] = round(c[train_major] / total, 4)
        stats[split] = s
        dist = ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in c.most_common())
        base = f"majority baseline accuracy {n_major}/{total} = {n_major / total:.3f} ('{major}')"
        if len(c) == 1:
            findings.append(Finding(WARNING, CHECK, f"{split}: only one label ('{major}'): "
                                    "nothing to classify", files[split], count=total))
        elif n_major / n_minor >= IMBALANCE_WARN:
            findings.append(Finding(WARNING, CHECK, f"{split}: severe label imbalance "
                                    f"(ratio {n_major / n_minor:.1f}): {dist}; {base}", files[split],
                                    count=total))
        elif n_major / n_minor >= IMBALANCE_INFO:
            findings.append(Finding(INFO, CHECK, f"{split}: label imbalance (ratio "
                                    f"{n_major / n_minor:.2f}): {dist}; {base}", files[split], count=total))
        else:
            findings.append(Finding(INFO, CHECK, f"{split}: labels {dist}; {base}", files[split],
                                    count=total))
    if train:
        known = set(counts[train])
        if labels:
            missing = [str(x) for x in labels if str(x) not in known]
            if missing:
                findings.append(Finding(WARNING, CHECK, f"{train}: labels never seen in training: "
                                        f"{missing}", files.get(train), count=len(missing)))
        for split in splits[1:]:
            unseen = sorted(set(counts[split]) - known)
            if unseen:
                n = sum(counts[split][u] for u in unseen)
                findings.append(Finding(WARNING, CHECK, f"{split}: {n} rows carry labels absent "
                                        f"from {train}: {unseen}", files[split], count=n))
    return findings, stats
