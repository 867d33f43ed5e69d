"""benchmarks/speed.py's contenders, each training one spec (see plan_runs) and returning its steps
(loss, label tokens, useful and computed tokens, wall and CPU time), its memory peak and held-out loss.

  tailorlm  its public API, `train(cfg, quiet=True, callbacks=[...])`: a callback resets the memory
            peak when training starts, takes the clock where every step starts and right after the
            last one (then scores the held-out loss), and keeps each step's metrics record.
  hf        `transformers.Trainer` (+ PEFT for LoRA), fed tailorlm's examples in tailorlm's order.
  trl       `trl.SFTTrainer` with packing.
"""
from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from harness import Mem
from speed_common import IGNORE, heldout_loss, load_tokens, now, step_plan, sync


# ============================================================================ contender: tailorlm

def _tailorlm_config(spec: dict, out_dir: Path) -> dict:
    n = spec["steps"]
    return {"model": spec["model"], "data": spec["raw_data"],
            "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0} if spec["method"] == "lora"
            else {"name": "full"},
            "train": {"steps": n, "batch_size": spec["batch"], "lr": spec["lr"], "warmup": 0, "schedule": "linear",
                      "min_lr_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": spec["precision"],
                      "device": spec["device"], "seed": spec["seed"], "log_every": 1, "eval_every": n,
                      "save_every": n, "keep_last": 1},
            # the loop's own evaluation made trivial: one example's loss, after the timed steps
            "eval": {"metrics": ["val_loss"], "metric": "val_loss", "before": False, "max_examples": 1, "keep_best": False},
            "retention": {"reference": None},   # no base-model reference probe (generation) around the steps
            "output": {"dir": str(out_dir), "overwrite": True}}


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


def _bench_callback(spec: dict, val: list):
    """A tailorlm Callback that times the steps, meters memory and scores `val` after the last step."""
    from tailorlm.train import Callback

    class Bench(Callback):
        def __init__(self):
            self.mem, self.marks, self.recs, self.data, self.end = Mem(spec["device"]), [], [], None, {}

        def on_start(self, run):   # model built, method applied and moved, optimizer ready: training starts
            self.data = run.data
            self.mem.start()

        def on_step_start(self, run):   # a step boundary, before the step builds its batch
            sync(run.device)
            self.marks.append(now())

        def on_step_end(self, run, rec):
            self.recs.append(dict(rec))
            if run.step == run.cfg.train.steps:   # right after the last step, before the loop's final eval
                sync(run.device)
                self.marks.append(now())
                self.end = {**self.mem.peak(), "heldout": heldout_loss(run.model, val, run.device, spec["precision"])}

    return Bench()


def run_tailorlm(spec: dict) -> dict:
    """tailorlm through its public API and a callback; nothing of the loop is replaced."""
    from tailorlm.config import load_config
    from tailorlm.train import train

    tokens = load_tokens(spec["tokens"])
    out_dir = Path(spec["work"]) / f"run-tailorlm-{spec['workload']}-{spec['method']}"
    cb = _bench_callback(spec, tokens["val"])
    summary = train(load_config(raw=_known_keys(_tailorlm_config(spec, out_dir)),
                                overrides=spec.get("tailorlm_overrides") or None), quiet=True, callbacks=[cb])
    data, marks = cb.data, cb.marks
    same = len(data.train) == len(tokens["train"]) and all(
        e.input_ids == list(x) and e.labels == list(y) for e, (x, y) in zip(data.train[:50], tokens["train"][:50]))
    if not same:
        raise RuntimeError("tailorlm's tokenization differs from the benchmark's shared tokens")
    recs = [r for r in cb.recs if "loss" in r]
    if len(recs) != len(marks) - 1:
        raise RuntimeError(f"{len(recs)} recorded steps for {len(marks) - 1} timed ones")
    steps = [{"loss": r["loss"], "n_targets": r["target_tokens"], "dt": b[0] - a[0], "cpu": b[1] - a[1],
              "dt_loop": r["tokens"] / r["tokens_per_s"], "computed": r["tokens"], "examples": len(r["examples"]),
              "useful": sum(len(data.train[i].input_ids) for i in r["examples"])}
             for r, a, b in zip(recs, marks, marks[1:])]
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"steps": steps, **cb.end, "skipped_steps": summary["skipped_steps"]}


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
                    self.times.append(now())

                def on_step_end(cb, args, state, control, **kw):
                    sync(dev)
                    self.times.append(now())

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


def _seed(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _base_model(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM
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

    tokens = load_tokens(spec["tokens"])
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

    tokens = load_tokens(spec["tokens"])
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
