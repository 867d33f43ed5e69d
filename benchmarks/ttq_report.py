"""benchmarks/time_to_quality.py's report: the machine, the best time to each target per contender
over the learning-rate grid, and every run's accuracy curve."""
from __future__ import annotations

from harness import md_table
from ttq_contenders import NAMES


def best(results: list[dict], contender: str, target: float) -> dict | None:
    """The contender's fastest run to `target`: {lr, step, train_s, accuracy}; None if none reached it."""
    hits = [{"lr": r["lr"], **r["reached"][str(target)]} for r in results
            if r["contender"] == contender and "error" not in r and r["reached"].get(str(target))]
    return min(hits, key=lambda h: h["train_s"]) if hits else None


def heading(a, info: dict, model: str, results: list[dict]) -> str:
    scorers = sorted({r["scorer"] for r in results if "scorer" in r})
    return "\n".join([
        f"## Time to quality: airline-tweet sentiment, {model}",
        "",
        f"Machine: {info['device_name']} ({info['device']}); CPU flags: {', '.join(info['cpu_flags']) or 'none'}; "
        f"precision for everyone: {info['precision']}; torch {info['torch']}, threads {a.threads or info['threads']}.",
        f"Grid: lr {', '.join(f'{x:g}' for x in a.lrs)}; cap {a.cap} steps; scored every {a.every} steps on "
        f"{a.held} held-out tweets by {', '.join(scorers) or '-'} (the clock paused while scoring).",
        ""])


def target_table(a, results: list[dict]) -> str:
    rows = []
    for c in a.contenders:
        for t in a.targets:
            b = best(results, c, t)
            got = [f"{b['train_s']:.1f}", b["step"], f"{b['lr']:g}", f"{b['accuracy']:.3f}"] if b else \
                [f"not reached in {a.cap} steps", "", "", ""]
            rows.append([NAMES[c], f"{t:.2f}"] + got)
    return md_table(["contender", "target", "time to target (s)", "step", "best lr", "accuracy there"], "lrrrrr", rows)


def run_table(a, results: list[dict]) -> str:
    rows = []
    for r in results:
        if "error" in r:
            why = "error: " + (r["error"].splitlines() or [""])[-1][:80]
            rows.append([NAMES[r["contender"]], f"{r['lr']:g}", why, "", "", ""])
            continue
        last = r["curve"][-1]
        s_per_step = last["train_s"] / last["step"] if last["step"] else 0.0
        peak = r.get("peak_cuda_alloc") or r.get("peak_rss") or 0
        curve = " ".join(f"{p['step']}:{p['accuracy']:.2f}" for p in r["curve"])
        rows.append([NAMES[r["contender"]], f"{r['lr']:g}", r["steps_done"], f"{s_per_step:.2f}",
                     f"{peak / 2**30:.2f}", curve])
    return md_table(["contender", "lr", "steps", "train s/step", "peak GiB", "accuracy curve (step:accuracy)"],
                    "lrrrrl", rows)


def report(a, info: dict, model: str, results: list[dict]) -> str:
    return "\n".join([heading(a, info, model, results), target_table(a, results), "", run_table(a, results)])
