#!/usr/bin/env python
"""Where a tailorlm training step spends its time: torch.profiler (CPU, or CPU + CUDA) over a few
steps of benchmarks/speed.py's workload a (airline tweets, LoRA r=16 on every linear layer, batch 8,
rows of 256 tokens) or b (text blocks), on the real SmolLM2-135M-Instruct, through tailorlm's
public API (`train(cfg, callbacks=[...])`: the profiler starts at a step boundary after --warmup
steps and stops after the last step, so set-up and evaluation are left out).

    PYTHONPATH=src python benchmarks/profile_step.py --threads 1                       # workload a
    PYTHONPATH=src python benchmarks/profile_step.py --workload b --steps 3 --warmup 1
    PYTHONPATH=src python benchmarks/profile_step.py train.loss_chunk=256 train.optimizer_impl=foreach

Extra KEY=VALUE arguments are tailorlm config overrides (the speed levers, say). Prints the top
--top operators by self CPU time and the same time grouped into where it goes (matmuls, attention,
loss, optimizer, elementwise, other).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cpu_flags, device_name  # noqa: E402
from speed_contenders import _known_keys, _tailorlm_config  # noqa: E402
from speed_data import prepare_data  # noqa: E402

# operator name patterns -> where the time goes (first match wins)
GROUPS = [("loss (log-softmax, NLL)", r"cross_entropy|nll_loss|log_softmax"),
          ("matmul", r"aten::(mm|addmm|bmm|matmul|linear|_mkldnn|mkldnn_|.*gemm)"),
          ("attention", r"scaled_dot_product|_flash_attention|_efficient_attention|aten::_?softmax"),
          ("optimizer", r"Optimizer|_foreach|_fused_adam|addcdiv|lerp|aten::sqrt"),
          ("copies / dtype casts", r"aten::(copy_|to|_to_copy|clone|contiguous|cat|index|gather|scatter)"),
          ("elementwise", r"aten::(mul|add|sub|div|silu|pow|rsqrt|mean|neg|exp|sum|where|fill_|zero_)")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="tailorlm config overrides, KEY=VALUE")
    p.add_argument("--workload", choices=("a", "b"), default="a")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--steps", type=int, default=4, help="steps in all (warm-up included)")
    p.add_argument("--warmup", type=int, default=2, help="steps before the profiler starts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--rows", type=int, default=400, help="tweets / documents read (only a few steps are run)")
    a = p.parse_args(argv)
    # what speed.py's CPU plan uses for these workloads
    a.batch_a, a.row_tokens_a, a.batch_b, a.seq_b, a.heldout_a, a.heldout_b = 8, 256, 4, 512, 0, 0
    a.workloads = [a.workload]
    return a


def profiler_callback(warmup: int, last: int):
    import torch
    from tailorlm.train import Callback

    class Prof(Callback):
        def __init__(self):
            self.prof, self.t0, self.wall = None, None, None

        def on_step_start(self, run):
            if run.step == warmup:
                self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + (
                    [torch.profiler.ProfilerActivity.CUDA] if run.device == "cuda" else []))
                self.prof.__enter__()
                self.t0 = time.perf_counter()

        def on_step_end(self, run, rec):
            if run.step == last and self.prof is not None:
                self.prof.__exit__(None, None, None)
                self.wall = time.perf_counter() - self.t0

    return Prof()


def grouped(events, total_us: float) -> list[tuple[str, float]]:
    """Self CPU time per group, as fractions of the total."""
    sums = {name: 0.0 for name, _ in GROUPS} | {"other": 0.0}
    for e in events:
        name = next((g for g, rx in GROUPS if re.search(rx, e.key)), "other")
        sums[name] += e.self_cpu_time_total
    return [(k, v / total_us) for k, v in sorted(sums.items(), key=lambda kv: -kv[1])]


def main(argv=None) -> int:
    from tailorlm.config import load_config
    from tailorlm.models.load import resolve
    from tailorlm.train import train

    a = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tailorlm-profile-"))
    info = prepare_data(work, a, str(resolve(a.model)))[a.workload]
    spec = {"model": a.model, "raw_data": info["raw_data"], "method": "lora", "steps": a.steps,
            "batch": a.batch_a if a.workload == "a" else a.batch_b, "lr": 2e-4, "precision": a.precision,
            "device": "cpu", "seed": 0}
    raw = _known_keys(_tailorlm_config(spec, work / "run"))
    raw["train"]["threads"] = a.threads
    cfg = load_config(raw=raw, overrides=a.overrides)
    cb = profiler_callback(a.warmup, a.steps)
    train(cfg, quiet=True, callbacks=[cb])
    events = cb.prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    n = a.steps - a.warmup
    print(f"# workload {a.workload}, {a.model}, precision {cfg.train.precision}, threads {a.threads}, "
          f"overrides {a.overrides or 'none'}; {device_name('cpu')}, flags {' '.join(cpu_flags())}")
    print(f"profiled {n} steps: {cb.wall / n:.2f} s/step wall, {total / 1e6 / n:.2f} s/step self CPU in operators")
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.top, max_name_column_width=60))
    print("where the self CPU time goes:")
    for name, frac in grouped(events, total):
        print(f"  {name:22s} {100 * frac:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
