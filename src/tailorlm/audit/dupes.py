"""Duplicate check: exact and near duplicates, within each split and across splits (leakage).

Duplicates make a model memorise a few examples and make validation scores lie: a val row that
is (almost) a train row measures recall, not generalisation.

- Exact: rows whose normalised text (lowercase, whitespace collapsed, punctuation stripped at the
  ends) hashes the same. For classification, a duplicate group whose labels disagree is reported
  on its own: the model is asked to learn both answers.
- Near: MinHash over shingles with LSH banding proposes candidate pairs; each candidate is then
  verified with the true Jaccard similarity of the shingle sets, so reported pairs are real, and
  the threshold means exactly what it says. Shingles are word n-grams (default: unigrams and
  bigrams, which keeps a one-word edit of a short text above 0.8 while unrelated texts that share
  common words stay far below) or character n-grams (`shingle="char"`).

Speed: shingles are hashed once with zlib.crc32 (stable across runs, unlike hash()); the 128
permutations are (a*x + b) mod (2^61 - 1) in numpy uint64 - a, b < 2^31 and x < 2^32 keep
a*x + b below 2^63, so nothing overflows - reduced per row with np.minimum.reduceat, in chunks
that bound memory. Rows with the same normalised text are MinHashed once.
"""
from __future__ import annotations

import hashlib
import re
import string
import zlib
from collections import Counter, defaultdict

import numpy as np

from .report import WARNING, Finding, MAX_EXAMPLES, example, shorten
from .schema import RowSchema

CHECK = "duplicates"
NUM_PERM = 128
_PRIME = np.uint64((1 << 61) - 1)
_CHUNK = 1 << 16                 # shingles per numpy block: 64k x 128 x 8 bytes = 64 MiB
_BUCKET_CAP = 300                # buckets larger than this are verified along a chain, not all pairs
_PUNCT = string.punctuation + "“”‘’«»…–—¡¿"
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip().strip(_PUNCT + " ")


def text_key(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()


def shingles(text: str, kind: str = "word", k: int = 2) -> np.ndarray:
    """Distinct crc32 hashes of the text's shingles. `word`: all word n-grams for n = 1..k;
    `char`: character k-grams of the normalised text. Texts shorter than one shingle become one."""
    norm = normalise(text)
    if kind == "word":
        words = _WORD.findall(norm)
        grams = set(words)
        for n in range(2, k + 1):
            grams.update(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    elif kind == "char":
        grams = {norm[i:i + k] for i in range(max(1, len(norm) - k + 1))}
    else:
        raise ValueError(f"unknown shingle kind {kind!r}; use word or char")
    grams.discard("")
    return np.fromiter((zlib.crc32(g.encode("utf-8", "surrogatepass")) for g in grams),
                       dtype=np.uint64, count=len(grams))


def minhash(sets: list[np.ndarray], num_perm: int = NUM_PERM, seed: int = 1) -> np.ndarray:
    """(len(sets), num_perm) MinHash signatures; an empty set gets all-max (matches nothing)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
    sig = np.full((len(sets), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    lens = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    start = 0
    while start < len(sets):
        # take whole rows until the block holds about _CHUNK shingles
        stop, total = start, 0
        while stop < len(sets) and (total == 0 or total + lens[stop] <= _CHUNK):
            total += lens[stop]
            stop += 1
        idx = [i for i in range(start, stop) if lens[i]]
        if idx:
            flat = np.concatenate([sets[i] for i in idx])
            offsets = np.concatenate(([0], np.cumsum(lens[idx])[:-1]))
            perm = (flat[:, None] * a + b) % _PRIME
            sig[idx] = np.minimum.reduceat(perm, offsets, axis=0)
        start = stop
    return sig


def lsh_params(threshold: float, num_perm: int = NUM_PERM, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band): the longest bands (fewest false candidates) that still propose a
    pair at the threshold with probability >= recall."""
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - threshold ** r) ** b >= recall:
            return b, r
    return num_perm, 1


def candidate_pairs(sig: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    bands, r = lsh_params(threshold, sig.shape[1])
    mult = np.random.default_rng(7).integers(1, 1 << 62, size=r, dtype=np.uint64) | np.uint64(1)
    pairs: set[tuple[int, int]] = set()
    valid = np.flatnonzero(sig[:, 0] != np.iinfo(np.uint64).max)
    for band in range(bands):
        # a 64-bit fingerprint of the band (uint64 arithmetic wraps, which is fine for hashing)
        keys = (sig[valid, band * r:(band + 1) * r] * mult).sum(axis=1)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        cuts = np.flatnonzero(np.diff(sk)) + 1
        for grp in np.split(order, cuts):
            if len(grp) < 2:
                continue
            members = sorted(valid[grp].tolist())
            if len(members) <= _BUCKET_CAP:
                pairs.update((members[i], members[j]) for i in range(len(members))
                             for j in range(i + 1, len(members)))
            else:
                pairs.update(zip(members, members[1:]))
                pairs.update((members[0], m) for m in members[1:])
    return pairs


def jaccard(x: set, y: set) -> float:
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def check_duplicates(rows: list[dict], layout: RowSchema, threshold: float = 0.8,
                     shingle: str = "word", k: int = 2) -> tuple[list[Finding], dict]:
    """rows carry `_split`; returns findings and stats for exact and near duplicates."""
    texts = [layout.content(r) for r in rows]
    keys = [text_key(t) for t in texts]
    findings: list[Finding] = []
    stats: dict = {}

    # exact, per split
    groups: dict[tuple[str, bytes], list[int]] = defaultdict(list)
    for i, (r, key) in enumerate(zip(rows, keys)):
        groups[(r["_split"], key)].append(i)
    splits = list(dict.fromkeys(r["_split"] for r in rows))
    exact: dict = {}
    for split in splits:
        dup = sorted((g for (s, _), g in groups.items() if s == split and len(g) > 1),
                     key=len, reverse=True)
        n_rows = sum(len(g) for g in dup)
        exact[split] = {"groups": len(dup), "rows": n_rows, "redundant": n_rows - len(dup)}
        if dup:
            first = rows[dup[0][0]]
            findings.append(Finding(
                WARNING, CHECK, f"{split}: {len(dup)} groups of exact duplicates ({n_rows} rows, "
                f"{n_rows - len(dup)} redundant)", first["_file"], first["_line"],
                [example(rows[g[0]], texts[g[0]], copies=len(g), lines=[rows[i]["_line"] for i in g[:8]])
                 for g in dup[:MAX_EXAMPLES]], n_rows - len(dup)))
        if layout.fmt == "classification":
            findings += _conflicts(split, dup, rows, texts, layout)
    stats["exact_duplicates"] = exact

    # exact, across splits: every later split against the earlier ones (val vs train, test vs both)
    seen: dict[bytes, int] = {}
    leaks: dict = {}
    for split in splits:
        idx = [i for i, r in enumerate(rows) if r["_split"] == split]
        hits = [(i, seen[keys[i]]) for i in idx if keys[i] in seen]
        if hits and split != splits[0]:
            leaks[split] = len(hits)
            i, j = hits[0]
            findings.append(Finding(
                WARNING, CHECK, f"leakage: {len(hits)} {split} rows exactly duplicate rows of "
                f"{_other_splits(splits, split)}", rows[i]["_file"], rows[i]["_line"],
                [example(rows[i], texts[i], same_as=f"{rows[j]['_file']}:{rows[j]['_line']}")
                 for i, j in hits[:MAX_EXAMPLES]], len(hits)))
        for i in idx:
            seen.setdefault(keys[i], i)
    stats["exact_leakage"] = leaks

    near_f, near_s = _near(rows, texts, keys, threshold, shingle, k)
    findings += near_f
    stats["near_duplicates"] = near_s
    return findings, stats


def _other_splits(splits: list[str], split: str) -> str:
    return "/".join(splits[:splits.index(split)])


def _conflicts(split, dup, rows, texts, layout) -> list[Finding]:
    bad = [g for g in dup if len({str(layout.get(rows[i], "label")) for i in g}) > 1]
    if not bad:
        return []
    first = rows[bad[0][0]]
    return [Finding(WARNING, CHECK, f"{split}: {len(bad)} duplicate groups carry different labels",
                    first["_file"], first["_line"],
                    [example(rows[g[0]], texts[g[0]],
                             labels=dict(Counter(str(layout.get(rows[i], "label")) for i in g)),
                             lines=[rows[i]["_line"] for i in g[:8]])
                     for g in bad[:MAX_EXAMPLES]], len(bad))]


def _near(rows, texts, keys, threshold, shingle, k) -> tuple[list[Finding], dict]:
    # one representative per (split, normalised text): exact copies are already reported
    reps: dict[tuple[str, bytes], int] = {}
    for i, r in enumerate(rows):
        reps.setdefault((r["_split"], keys[i]), i)
    rep_idx = list(reps.values())
    by_key: dict[bytes, np.ndarray] = {}
    sets = []
    for i in rep_idx:
        if keys[i] not in by_key:
            by_key[keys[i]] = shingles(texts[i], shingle, k)
        sets.append(by_key[keys[i]])
    sig = minhash(sets)
    cands = candidate_pairs(sig, threshold)
    py_sets: dict[int, set] = {}

    def as_set(n: int) -> set:
        if n not in py_sets:
            py_sets[n] = set(sets[n].tolist())
        return py_sets[n]

    within: dict[str, list] = defaultdict(list)
    across: dict[str, list] = defaultdict(list)
    split_order = list(dict.fromkeys(r["_split"] for r in rows))
    for x, y in cands:
        i, j = rep_idx[x], rep_idx[y]
        if keys[i] == keys[j]:
            continue                      # same text in two splits: exact leakage, reported above
        sim = jaccard(as_set(x), as_set(y))
        if sim < threshold:
            continue
        si, sj = rows[i]["_split"], rows[j]["_split"]
        if si == sj:
            within[si].append((sim, i, j))
        else:
            # attribute the leak to the later split (val row resembling a train row)
            if split_order.index(si) < split_order.index(sj):
                i, j = j, i
            across[rows[i]["_split"]].append((sim, i, j))
    findings, stats = [], {"threshold": threshold, "shingle": f"{shingle}:{k}",
                           "candidates": len(cands), "within": {}, "leakage": {}}
    for split, pairs in within.items():
        pairs.sort(key=lambda p: -p[0])
        involved = {i for _, i, j in pairs} | {j for _, i, j in pairs}
        stats["within"][split] = {"pairs": len(pairs), "rows": len(involved),
                                  "clusters": _clusters(pairs)}
        findings.append(_pair_finding(f"{split}: {len(pairs)} near-duplicate pairs over "
                                      f"{len(involved)} rows (Jaccard >= {threshold})",
                                      pairs, rows, texts, len(pairs)))
    for split, pairs in across.items():
        pairs.sort(key=lambda p: -p[0])
        leaked = {i for _, i, _ in pairs}
        stats["leakage"][split] = {"pairs": len(pairs), "rows": len(leaked)}
        findings.append(_pair_finding(f"leakage: {len(leaked)} {split} rows are near duplicates of "
                                      f"{_other_splits(split_order, split) or 'other splits'} rows "
                                      f"(Jaccard >= {threshold})", pairs, rows, texts, len(leaked)))
    return findings, stats


def _pair_finding(msg, pairs, rows, texts, count) -> Finding:
    _, i0, _ = pairs[0]
    exs = [example(rows[i], texts[i], similarity=round(sim, 3),
                   similar_to=f"{rows[j]['_file']}:{rows[j]['_line']}", other_text=shorten(texts[j]))
           for sim, i, j in pairs[:MAX_EXAMPLES]]
    return Finding(WARNING, CHECK, msg, rows[i0]["_file"], rows[i0]["_line"], exs, count)


def _clusters(pairs) -> int:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, i, j in pairs:
        parent[find(i)] = find(j)
    return len({find(x) for x in parent})
