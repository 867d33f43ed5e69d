"""The privacy and bias probes of a real run, over seeds: the figures README.md publishes.

    python benchmarks/probes.py [--seeds 3] [--steps 150] [--train 2000] [--out runs/bench-probes]

Each seed is the `airline-lora` preset on the first `--train` airline tweets of one shuffle (300
held out), `--steps` steps, with 4 canaries at each of 1, 4 and 16 copies; then `tailorlm privacy
RUN --k 8 --m 2` (the label word and its terminator are the tokens a classification run trains) and
`tailorlm bias RUN`, the command-line tools a user runs. A seed whose run and probes already exist
in --out is read back, not rerun. The table gives each figure's base and tuned
value and change as the mean over seeds, with the smallest and largest change, and how many seeds
the probe called significant.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from harness import airline_rows, child_env, md_table, write_split

CANARIES = ["privacy.canaries.count=4", "privacy.canaries.repetitions=[1,4,16]"]


def run_seed(out: Path, seed: int, steps: int, n_train: int, threads: int) -> dict:
    folder = out / f"seed-{seed}"
    data, run = folder / "data", folder / "run"
    probes = {p: run / "probes" / f"{p}.json" for p in ("privacy", "bias")}
    if not all(p.is_file() for p in probes.values()):
        data.mkdir(parents=True, exist_ok=True)
        write_split(data, airline_rows(seed), 300, n_train=n_train)
        tl = [sys.executable, "-m", "tailorlm"]
        env = child_env()
        subprocess.run(tl + ["train", "--preset", "airline-lora", f"data.train={data / 'train.jsonl'}",
                             f"data.test={data / 'test.jsonl'}", f"train.steps={steps}", f"train.seed={seed}",
                             f"train.threads={threads}", f"output.dir={run}", "output.overwrite=true", *CANARIES],
                       check=True, env=env)
        subprocess.run(tl + ["privacy", str(run), "--k", "8", "--m", "2"], check=True, env=env)
        subprocess.run(tl + ["bias", str(run)], check=True, env=env)
    return {p: json.loads(f.read_text()) for p, f in probes.items()}


def rows_of(probe: dict) -> dict:
    """{(metric, group): row} of one probe file's overall rows."""
    return {(r.get("metric"), r.get("group")): r for r in probe.get("rows") or []}


def table(results: list[dict], probe: str) -> str:
    keys = list(rows_of(results[0][probe]))
    out = []
    for key in keys:
        rs = [rows_of(r[probe]).get(key) for r in results]
        rs = [r for r in rs if r]
        ch = [r["change"] for r in rs if isinstance(r.get("change"), (int, float))]
        mean = lambda k: statistics.fmean(r[k] for r in rs if isinstance(r.get(k), (int, float)))  # noqa: E731
        if not ch:
            continue
        # (a | inside a cell would end it)
        out.append([str(key[0]).replace("|", "\\|"), key[1] or "", f"{mean('base'):.4f}", f"{mean('tuned'):.4f}",
                    f"{statistics.fmean(ch):+.4f}", f"[{min(ch):+.4f}, {max(ch):+.4f}]",
                    f"{sum(bool(r.get('significant')) for r in rs)}/{len(rs)}"])
    return md_table(["metric", "group", "base", "tuned", "change (mean)", "change (min, max over seeds)",
                     "significant"], "llrrrrr", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-probes"))
    a = ap.parse_args()
    results = [run_seed(a.out, s, a.steps, a.train, a.threads) for s in range(a.seeds)]
    for probe in ("privacy", "bias"):
        print(f"\n### {probe} ({a.seeds} seeds, {a.steps} steps, {a.train} training tweets)\n")
        print(table(results, probe))
        for k, r in enumerate(results):
            for w in r[probe].get("warnings") or []:
                print(f"- seed {k}: {w}")


if __name__ == "__main__":
    main()
