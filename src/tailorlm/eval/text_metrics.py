"""Generation metrics: exact match, token F1 (SQuAD-style) and ROUGE-L (Lin 2004), on normalised text."""
from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    """Lowercase, drop punctuation and English articles, collapse whitespace (SQuAD's normalisation)."""
    return " ".join(_ARTICLES.sub(" ", _PUNCT.sub(" ", text.lower())).split())


def exact_match(pred: str, gold: str) -> float:
    return float(normalise(pred) == normalise(gold))


def token_f1(pred: str, gold: str) -> float:
    p, g = normalise(pred).split(), normalise(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, gold: str) -> float:
    """F-measure of the longest common subsequence of tokens (beta = 1)."""
    p, g = normalise(pred).split(), normalise(gold).split()
    if not p or not g:
        return float(p == g)
    lcs = _lcs(p, g)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(g)
    return 2 * precision * recall / (precision + recall)


def generation_scores(preds: list[str], golds: list[str]) -> dict:
    n = max(len(golds), 1)
    return {"exact_match": sum(map(exact_match, preds, golds)) / n, "token_f1": sum(map(token_f1, preds, golds)) / n,
            "rouge_l": sum(map(rouge_l, preds, golds)) / n}
