"""What one finished run cost, measured from its directory, outside its training process:

    trainable_params   parameters with requires_grad on the model rebuilt from final/ (methods.count)
    artifact_bytes     the *.safetensors files in final/: the adapter, or the whole model for full FT
    final_bytes        every file in final/ (tokenizer, configs, model card included)
    peak_rss_bytes     the training window's peak resident memory (PeakMemory below, device.PeakMeter: VmHWM
                       reset when the first step starts), the largest over the run's processes; on CUDA, peak_cuda_bytes
                       (torch.cuda.max_memory_allocated over the same window)
    train_time_s, tokens_per_s   from summary.json (seconds inside optimizer steps, summed over resumes;
                       the examples' own tokens per second, padding not counted)
    latency_ms         one forward of a held-out prompt (batch 1, the next token's logits), the median of
    latency_merged_ms  `repeats` passes over the same `prompts` held-out rows, per prompt: the model as
                       loaded (adapter beside the base) and with the method merged into the weights
                       (methods' merge); None where the method cannot merge (bottleneck, prompt tuning)
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ..device import PeakMeter, autocast
from ..export.parity import held_out_prompts
from ..methods import METHODS, NotMergeable, count
from ..run import RunDir, open_run
from ..train import Callback


class PeakMemory(Callback):
    """Named in train.callbacks by the compare: resets the peak when training starts and logs
    {"peak_memory": {...}} to metrics.jsonl when it ends (finished, stopped or interrupted).
    The meter is device.PeakMeter; where its reset is refused the peak is the process-wide one."""

    def on_start(self, run) -> None:
        self.meter = PeakMeter(run.device)
        self.meter.start()

    def on_train_end(self, run) -> None:
        meter = getattr(self, "meter", None) or PeakMeter(run.device)
        peak = meter.peak()
        rec = {"peak_rss_bytes": peak["peak_rss"], "window": "training" if meter.reset else "process"}
        if "peak_cuda_alloc" in peak:
            rec["peak_cuda_bytes"] = peak["peak_cuda_alloc"]
        run.log({"peak_memory": rec})


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file())


@torch.no_grad()
def latency_ms(model, prompts: list[list[int]], device: str, precision: str, repeats: int = 3) -> float:
    """Median over `repeats` passes (after one warm-up pass) of the time per prompt of a batch-1
    forward that returns the next token's logits: the prefill a served request pays."""
    model.eval()

    def one_pass() -> None:
        for ids in prompts:
            x = torch.tensor([ids], device=device)
            with autocast(device, precision):
                model(input_ids=x, attention_mask=torch.ones_like(x), logits_to_keep=1)
        if device == "cuda":
            torch.cuda.synchronize()

    one_pass()   # warm-up: allocations, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times) / len(prompts)


def peak_memory(run_dir: Path) -> dict:
    """The largest training-window peak over the run's processes (metrics.jsonl's peak_memory records)."""
    recs = [r["peak_memory"] for r in RunDir.at(run_dir).metrics() if "peak_memory" in r]
    out = {}
    for key in ("peak_rss_bytes", "peak_cuda_bytes"):
        vals = [r[key] for r in recs if r.get(key) is not None]
        out[key] = max(vals) if vals else None
    return out


def measure_run(run_dir: str | Path, *, prompts: int = 8, repeats: int = 3) -> dict:
    """Every cost figure of one finished run (see the module's docstring)."""
    run = RunDir.at(run_dir)
    summary = run.summary(required=True)
    opened = open_run(run.path, threads=True)   # train.threads for the timings; restored after
    cfg, model, tok = opened.cfg, opened.model, opened.tokenizer
    try:
        device = opened.device
        model.to(device)
        ids, source = held_out_prompts(cfg, tok, prompts)
        out = {"trainable_params": count(model)[0], "total_params": count(model)[1],
               "artifact_bytes": folder_bytes(run.final, "*.safetensors"),
               "final_bytes": folder_bytes(run.final), **peak_memory(run.path),
               "train_time_s": summary.get("train_time_s"), "tokens_per_s": summary.get("tokens_per_s"),
               "summary_wall_time_s": summary.get("wall_time_s"),
               "latency_ms": latency_ms(model, ids, device, cfg.train.precision, repeats),
               "latency_prompts": len(ids), "latency_from": source, "latency_threads": torch.get_num_threads()}
        try:
            merged = METHODS[cfg.method.name].merge(model)
            out["latency_merged_ms"] = latency_ms(merged, ids, device, cfg.train.precision, repeats)
        except NotMergeable:
            out["latency_merged_ms"] = None
    finally:
        opened.restore_threads()
    return out
