"""`tailorlm plan`'s peak memory against the measured one, in fresh processes.

    python benchmarks/plan_memory.py --one '{"config": {...}}'     one run (what the parent starts)

A child imports the libraries, records its resident memory just before the model loads (the
moment `build` is called, data about to be tokenised), resets the peak (VmHWM, by writing 5 to
/proc/self/clear_refs) when the loop starts and reads it when the loop ends: measured = peak RSS over
the training steps - RSS before the model loads, which is what plan/memory.py predicts on a CPU.
tests/test_plan_accuracy.py runs the configurations and checks the errors.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Mem, emit  # noqa: E402


class PeakWindow:
    """A loop callback: the peak resident memory from the first step to the last."""

    def __init__(self):
        self.mem = Mem("cpu")
        self.result = None

    def on_start(self, run):
        self.mem.start()

    def on_train_end(self, run):
        self.result = self.mem.peak()


def return_freed_memory() -> bool:
    """glibc: serve every allocation of 128 KiB or more by mmap, so that a freed tensor leaves the
    process at once. glibc starts at this threshold but raises it (up to 32 MiB) as blocks are freed,
    after which freed activations stay in the heap: the same SmolLM2 forward then measured 1.38 or
    1.85 GiB from run to run (and 0.52 GiB came back with malloc_trim). Pinned, the measured peak is
    the peak of memory in use. It costs page faults (a 1 MiB pin cost about 15% of a SmolLM2 LoRA
    step on this CPU), which is why tailorlm train leaves glibc's default alone."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024) == 1   # M_MMAP_THRESHOLD
    except OSError:
        return False


def one(spec: dict) -> dict:
    pinned = return_freed_memory() if spec.get("pin", True) else False
    import peft  # noqa: F401  (the libraries are part of the baseline, not of the run)
    import torch
    import transformers  # noqa: F401

    from tailorlm.run import open as build_mod   # (the run start: loaded before the baseline is read)
    from tailorlm.config import load_config
    from tailorlm.device import proc_status
    from tailorlm.plan import plan
    from tailorlm.train import setup, train

    cfg = load_config(raw=spec["config"])
    torch.set_num_threads(cfg.train.threads or 1)
    predicted = plan(cfg, memory=10 ** 15)
    before = {}
    original = setup.build

    def build_spy(*a, **kw):   # RSS just before data and model load
        before["rss"] = proc_status("VmRSS").get("VmRSS")
        return original(*a, **kw)

    setup.build = build_spy
    window = PeakWindow()
    try:
        summary = train(load_config(raw=spec["config"]), quiet=True, callbacks=[window])
    finally:
        setup.build = original
    del build_mod
    measured = window.result["peak_rss"] - before["rss"]
    return {"predicted": predicted.total, "measured": measured, "parts": predicted.parts,
            "moment": predicted.moment, "baseline_rss": before["rss"], "pinned": pinned, "at_start": window.result["rss_at_start"] - before["rss"],
            "predicted_step_s": predicted.step_time_s, "measured_step_s": predicted.tokens_per_step / summary["tokens_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", required=True, help="JSON: {config: raw config dict}")
    emit(one(json.loads(ap.parse_args().one)))


if __name__ == "__main__":
    main()
