"""What benchmarks/speed.py's contenders share: the token ids, tailorlm's step order, one held-out
loss for everyone, the clock, and the summary of a run's steps."""
from __future__ import annotations

import statistics
import time

IGNORE = -100


def load_tokens(path: str):
    import torch
    return torch.load(path, weights_only=True)


def step_plan(n_train: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The example indices of each step, in tailorlm's own seeded order (its data.batching.Order)."""
    from tailorlm.data.batching import Order
    order = Order(n_train, batch, seed)
    return [order.micro_batch(s) for s in range(steps)]


def _padded(chunk: list, device: str):
    """Right-padded (ids, attention mask, next-token targets) of [(ids, labels)]."""
    import torch
    w = max(len(x) for x, _ in chunk)
    ids = torch.zeros((len(chunk), w), dtype=torch.long)
    mask = torch.zeros((len(chunk), w), dtype=torch.long)
    tgt = torch.full((len(chunk), w), IGNORE, dtype=torch.long)
    for r, (x, y) in enumerate(chunk):
        ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(x)] = 1
        tgt[r, :len(x) - 1] = torch.tensor(y[1:])
    return ids.to(device), mask.to(device), tgt.to(device)


def heldout_loss(model, val: list, device: str, precision: str, batch: int = 4) -> float | None:
    """Token-weighted mean CE over the label tokens of `val` ([(ids, labels)]): right-padded
    batches with an attention mask, labels shifted inside each example; the same for everyone."""
    import torch
    import torch.nn.functional as F
    if not val:
        return None
    was = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(val), batch):
            ids, mask, tgt = _padded(val[i:i + batch], device)
            ctx = (torch.autocast(device_type=device, dtype=torch.bfloat16) if precision == "bf16"
                   else torch.autocast(device_type=device, enabled=False))
            with ctx:
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            total += float(F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=IGNORE,
                                           reduction="sum"))
            n += int((tgt != IGNORE).sum())
            del logits
    model.train(was)
    return total / max(n, 1)


def now() -> tuple[float, float]:
    """(wall clock, this process's CPU time over all its threads)."""
    return time.perf_counter(), time.process_time()


def sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def summarise(steps: list[dict], warmup: int, last: int) -> dict:
    timed = steps[warmup:] or steps
    t, cpu = sum(s["dt"] for s in timed), sum(s["cpu"] for s in timed)
    tail = steps[-last:]
    return {"tok_s": sum(s["useful"] for s in timed) / t, "computed_tok_s": sum(s["computed"] for s in timed) / t,
            "tok_cpu_s": sum(s["useful"] for s in timed) / cpu, "step_s": t / len(timed), "step_cpu_s": cpu / len(timed),
            "tok_s_median": statistics.median(s["useful"] / s["dt"] for s in timed), "useful_per_step": statistics.mean(s["useful"] for s in timed),
            "computed_per_step": statistics.mean(s["computed"] for s in timed),
            "examples_per_step": statistics.mean(s["examples"] for s in steps),
            "train_loss": sum(s["loss"] * s["n_targets"] for s in tail) / sum(s["n_targets"] for s in tail)}
