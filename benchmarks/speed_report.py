"""benchmarks/speed.py's report: the markdown table of ratios, the issue's targets, the heading."""
from __future__ import annotations

import os

from harness import cpu_flags, device_name, md_table

NAMES = {"tailorlm": "tailorlm", "hf": "HF Trainer + PEFT", "trl": "TRL SFTTrainer (packing)"}
NAMES_FULL = {"tailorlm": "tailorlm", "hf": "HF Trainer", "trl": "TRL SFTTrainer (packing)"}


def gib(x) -> str:
    return "n/a" if x is None else f"{x / 2**30:.2f}"


def ratio(x, y, fmt="{:.2f}x") -> str:
    return "" if x is None or y is None or y == 0 else fmt.format(x / y)


def _row(r: dict, hf: dict | None, trl: dict | None, mem_key: str) -> list:
    rel = lambda k, o: "" if o is None or o is r else ratio(r[k], o[k])  # noqa: E731
    drel = lambda k, o: ("" if o is None or o is r or r.get(k) is None or o.get(k) is None  # noqa: E731
                         else f"{100 * (r[k] / o[k] - 1):+.2f}%")
    held = "" if r.get("heldout") is None else f"{r['heldout']:.4f}"
    return [f"{r['tok_s']:.1f}", rel("tok_s", hf), rel("tok_s", trl),
            f"{r['tok_cpu_s']:.1f}", rel("tok_cpu_s", hf), rel("tok_cpu_s", trl),
            f"{r['step_s']:.2f}", f"{r['useful_per_step']:.0f} / {r['computed_per_step']:.0f}",
            gib(r.get(mem_key)), rel(mem_key, hf), f"{r['train_loss']:.4f}", drel("train_loss", hf),
            held, drel("heldout", hf)]


def table(results: list[dict], device: str) -> str:
    """Markdown: one row per run, ratios against HF Trainer (+ PEFT) and TRL on the same workload and method."""
    mem_key = "peak_cuda_alloc" if device == "cuda" else "peak_rss"
    mem_name = "peak alloc GiB" if device == "cuda" else "peak RSS GiB"
    head = ["wl", "method", "contender", "useful tok/s", "vs HF", "vs TRL", "useful tok/CPU-s", "vs HF", "vs TRL",
            "s/step", "useful / computed tok per step", mem_name, "vs HF", "train loss", "vs HF", "held-out loss",
            "vs HF"]
    by = {(r["workload"], r["method"], r["contender"]): r for r in results}
    rows = []
    for r in results:
        key = (r["workload"], r["method"])
        name = (NAMES if r["method"] == "lora" else NAMES_FULL)[r["contender"]]
        if "error" in r:
            rows.append([*key, name, f"failed: {r['error'].splitlines()[-1][:120]}"])
            continue
        hf, trl = by.get(key + ("hf",)), by.get(key + ("trl",))
        hf = hf if hf and "error" not in hf else None
        trl = trl if trl and "error" not in trl else None
        rows.append([*key, name, *_row(r, hf, trl, mem_key)])
    return md_table(head, "lll" + "r" * 14, rows)


def verdicts(results: list[dict], device: str) -> list[str]:
    """Issue 18's targets, met or not (speed by the wall clock; the CPU-time ratio beside it is the one
    to trust when other work shares the machine). CPU: (a) LoRA >= 1.4x HF Trainer + PEFT's useful
    tokens/s, (b) LoRA and full >= 1.0x at no more peak memory. CUDA: LoRA >= 1.5x at <= 0.6x its peak
    memory, full >= 1.0x. Losses agree within 1% (2% under bf16, where another row layout rounds
    differently): the same work."""
    mem_key = "peak_cuda_alloc" if device == "cuda" else "peak_rss"
    by = {(r["workload"], r["method"], r["contender"]): r for r in results if "error" not in r}
    out = []

    def check(t, o, speed_target, mem_target, what):
        w, c, mm = t["tok_s"] / o["tok_s"], t["tok_cpu_s"] / o["tok_cpu_s"], t[mem_key] / o[mem_key]
        met = w >= speed_target and (mem_target is None or mm <= mem_target)
        mem = f" at <= {mem_target}x its peak memory" if mem_target else ""
        out.append(f"- {what} >= {speed_target}x{mem}: {w:.2f}x wall-clock ({c:.2f}x per CPU-second), memory "
                   f"{mm:.2f}x -> {'met' if met else 'NOT met'}")

    tol = 0.02 if any(r.get("precision") == "bf16" for r in results) else 0.01
    for w, m in (("a", "lora"), ("b", "lora"), ("b", "full")):
        t, h, s = (by.get((w, m, c)) for c in ("tailorlm", "hf", "trl"))
        hf = f"HF Trainer{' + PEFT' if m == 'lora' else ''}"
        if t and h:
            if device == "cuda":
                check(t, h, 1.5 if m == "lora" else 1.0, 0.6 if m == "lora" else 1.0, f"({w}) {m} tokens/s vs {hf}")
            else:
                check(t, h, 1.4 if w == "a" else 1.0, None if w == "a" else 1.0, f"({w}) {m} useful tokens/s vs {hf}")
            for k, name in (("train_loss", "train loss"), ("heldout", "held-out loss")):
                if t.get(k) is not None and h.get(k) is not None:
                    d = abs(t[k] / h[k] - 1)
                    out.append(f"  ({w}) {m} {name} within {100 * tol:.0f}% of {hf}: {100 * d:.2f}% -> "
                               f"{'met' if d <= tol else 'NOT met'}")
        if t and s:
            out.append(f"  ({w}) {m} vs TRL SFTTrainer (packing): {t['tok_s'] / s['tok_s']:.2f}x useful tokens/s "
                       "(TRL's steps hold other examples, so losses agree only roughly)")
    loads = [x for r in results if "loadavg" in r for x in r["loadavg"]]
    if loads:
        out.append(f"- 1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f} "
                   f"(on {os.cpu_count()} cores; above that, other work shared the CPU)")
    return out


def heading(a, info: dict, results: list[dict], model: str, device: str, precision: str) -> str:
    """The report's title line and one line per workload and for the model."""
    import peft
    import torch
    import transformers
    import trl
    threads = ",".join(sorted({str(r["threads"]) for r in results if "threads" in r})) or "?"
    flags = "" if device == "cuda" else f"CPU flags {' '.join(cpu_flags()) or 'none'}, "
    lines = [f"\n## tailorlm speed benchmark ({device_name(device)}, {flags}{threads} torch threads per run; torch "
             f"{torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, trl "
             f"{trl.__version__}; {precision})\n"]
    for w, i in info.items():
        desc = (f"instruction SFT, LoRA r=16 all linear; {a.batch_a} examples per step, row budget {a.row_tokens_a}, "
                f"{a.steps_a} steps" if w == "a" else
                f"continued pre-training, blocks of {a.seq_b}; {a.batch_b} blocks per step, {a.steps_b} steps")
        lines.append(f"- ({w}) {desc}. Data: {i['source']}; {i['n_train']} examples, mean {i['mean_len']:.0f} tokens "
                     f"(max {i['max_len']}), {100 * i['target_frac']:.0f}% of tokens labelled; held-out {i['n_val']}.")
    lines.append(f"- Model: {model}. Timing excludes the first {a.warmup} steps; train loss = token-weighted mean "
                 f"over the last {a.last} steps.\n")
    return "\n".join(lines)
