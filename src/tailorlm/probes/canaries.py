"""Canaries and their exposure (Carlini et al. 2019, "The Secret Sharer", USENIX Security).

A canary is the pattern with its placeholders filled at random ("my account number is {digits:9}"
-> "my account number is 305718264"). `privacy.canaries` inserts `count` of them at each repetition
level (1, 4, 16 copies) as extra training rows: plain text, every token trained, added when the run
builds its data (never written into the user's files) and recorded in RUN/canaries.json. They are
drawn from a seeded generator, so a resumed run re-inserts the same ones. Never-inserted secrets of
the same pattern are the control ("never") and the reference set R.

Exposure of a secret s with log-perplexity l(s) = -log2 p(s | prefix) (§4):
    rank      exposure = log2(|R| + 1) - log2(rank),  rank = 1 + #{r in R : l(r) < l(s)}   (§4.2)
    extrapolated  exposure = -log2 P(l(r) <= l(s)), P a skew-normal fitted to the reference
              l(r) (§4.3), capped at log2 of the number of possible secrets
A secret the model never saw ranks uniformly among R: exposure ~ -log2(U), mean log2(e) = 1.44.
"""
from __future__ import annotations

import json
import math
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..data.tokenize import IGNORE, Example, bos_prefix
from ..errors import ConfigError, MissingError
from ..run import RunDir
from ..run.folder import CANARIES

SLOT = re.compile(r"\{(digits|letters):(\d+)\}")
ALPHABETS = {"digits": "0123456789", "letters": "abcdefghijklmnopqrstuvwxyz"}
FILE = CANARIES   # (its path in a run: RunDir.canaries_file)


@dataclass
class Canaries:
    pattern: str
    prefix: str                  # the text before the first placeholder: what every canary shares
    inserted: list[dict]         # {"text", "repetitions"}: the secrets trained on
    never: list[str]             # the control: same pattern, never inserted
    references: list[str]        # R: never inserted, ranked against
    space: int                   # how many secrets the pattern can produce

    def levels(self) -> list[int]:
        return sorted({c["repetitions"] for c in self.inserted})

    def save(self, run_dir: str | Path) -> Path:
        path = RunDir.at(run_dir).canaries_file
        write_text(path, json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "Canaries | None":
        stored = RunDir.at(run_dir).canaries()
        return None if stored is None else cls(**stored)


def space_of(pattern: str) -> int:
    slots = SLOT.findall(pattern)
    if not slots:
        raise ConfigError(f"privacy.canaries.pattern {pattern!r} has no secret. Fix: put {{digits:N}} or "
                          "{letters:N} where the random secret goes, e.g. 'my account number is {digits:9}'")
    if not pattern[:SLOT.search(pattern).start()].strip():
        raise ConfigError(f"privacy.canaries.pattern {pattern!r} starts with its secret; exposure is the secret's "
                          "likelihood given the text before it. Fix: text first, e.g. 'the secret code is {digits:6}'")
    return math.prod(len(ALPHABETS[kind]) ** int(n) for kind, n in slots)


def make_canaries(ccfg, seed: int) -> Canaries:
    """`count` secrets per repetition level, `count` never-inserted controls and `references` more,
    all distinct, from a generator seeded by the run's seed (the same run draws the same ones)."""
    space = space_of(ccfg.pattern)
    need = ccfg.count * (len(ccfg.repetitions) + 1) + ccfg.references
    if need > space // 2:
        raise ConfigError(f"privacy.canaries.pattern {ccfg.pattern!r} has only {space} possible secrets for "
                          f"{need} distinct ones. Fix: a longer secret ({{digits:9}}) or fewer references")
    rng, seen, texts = random.Random(f"tailorlm-canaries-{seed}"), set(), []
    while len(texts) < need:
        t = SLOT.sub(lambda m: "".join(rng.choice(ALPHABETS[m[1]]) for _ in range(int(m[2]))), ccfg.pattern)
        if t not in seen:
            seen.add(t)
            texts.append(t)
    c, reps = ccfg.count, list(ccfg.repetitions)
    inserted = [{"text": texts[i * c + j], "repetitions": r} for i, r in enumerate(reps) for j in range(c)]
    return Canaries(ccfg.pattern, ccfg.pattern[:SLOT.search(ccfg.pattern).start()], inserted,
                    texts[len(inserted):len(inserted) + c], texts[len(inserted) + c:], space)


def training_examples(c: Canaries, tok) -> list[Example]:
    """Each inserted canary as a plain-text training example (every token trained, EOS at its end, as
    `text` data is), repeated its number of times."""
    bos = bos_prefix(tok)
    out = []
    for i, can in enumerate(c.inserted):
        ids = bos + tok(can["text"] + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
        out += [Example(ids, list(ids), "<canary>", i) for _ in range(can["repetitions"])]
    return out


def insert_canaries(cfg, data, tok, run_dir: str | Path | None = None) -> Canaries | None:
    """Append the configured canaries to data.train (after the user's rows were read and split, so no
    canary is held out) and record them in RUN/canaries.json; None when privacy.canaries is off."""
    cc = cfg.privacy.canaries
    if not cc.count:
        return None
    if cfg.model.task != "causal_lm":
        raise ConfigError("privacy.canaries: a classification head (model.task: sequence_classification) does "
                          "not model text, so canaries cannot be scored. Fix: privacy.canaries.count=0")
    if data.report.get("balance") == "sample":
        raise ConfigError("privacy.canaries with data.balance: sample would draw the canaries as a class of "
                          "their own. Fix: data.balance: weight or none")
    c = make_canaries(cc, cfg.train.seed)
    extra = training_examples(c, tok)
    for j, e in enumerate(extra):
        e.id = len(data.train) + j
    data.train.extend(extra)
    data.report["canaries"] = {"secrets": len(c.inserted), "rows": len(extra), "file": FILE}
    if run_dir is not None:
        c.save(run_dir)
    return c


def user_examples(data) -> list:
    """data.train without the canary rows insert_canaries appended."""
    n = data.report.get("canaries", {}).get("rows", 0)
    return data.train[:len(data.train) - n] if n else data.train


def secret_examples(c: Canaries, texts: list[str], tok) -> list[Example]:
    """Each text as an example whose targets are the secret's tokens only (the shared prefix's tokens
    are context): its NLL sum is the secret's log-perplexity given the prefix (in nats)."""
    bos = bos_prefix(tok)
    head = bos + tok(c.prefix.rstrip(), add_special_tokens=False)["input_ids"]
    out = []
    for i, t in enumerate(texts):
        ids = bos + tok(t, add_special_tokens=False)["input_ids"]
        n = next((j for j in range(min(len(head), len(ids) - 1)) if ids[j] != head[j]), min(len(head), len(ids) - 1))
        out.append(Example(ids, [IGNORE] * n + ids[n:], "<secret>", i))
    return out


def exposure_rank(nll: np.ndarray, ref_nll: np.ndarray) -> np.ndarray:
    """log2(|R| + 1) - log2(rank) per secret; rank 1 = lower NLL than every reference."""
    ranks = 1 + np.searchsorted(np.sort(ref_nll), nll, side="left")
    return math.log2(len(ref_nll) + 1) - np.log2(ranks)


def exposure_extrapolated(nll: np.ndarray, ref_nll: np.ndarray, space: int) -> np.ndarray:
    """-log2 CDF(nll) under a skew-normal fitted to the references' NLL (Carlini et al. 2019 §4.3),
    capped at log2(space): no secret can be more exposed than ranking first among all possible ones."""
    try:
        from scipy.stats import skewnorm
    except ImportError:
        raise MissingError("the extrapolated canary exposure needs scipy. Fix: pip install 'tailorlm[privacy]'") from None
    a, loc, scale = skewnorm.fit(ref_nll)
    cdf = np.maximum(skewnorm.cdf(nll, a, loc, scale), 1.0 / space)
    return -np.log2(cdf)
