"""benchmarks/time_to_quality.py's contenders. Each trains the airline-tweet sentiment task at one
learning rate and takes the shared scorer as an argument (`scorer(model, held)`), which a Tracker
calls at step 0 and every N steps with the clock paused.

  tailorlm  the shipped preset `airline-lora` and tailorlm's defaults through its public API
            (`load_config` + `train(cfg, callbacks=[...])`); only the data files, the step cap, the
            learning rate and what is not training (the loop's own evaluations: one val_loss on 8
            examples after the last step; no base-model evaluation, no retention probe) are changed.
  hf        `transformers.Trainer` + `peft.get_peft_model(LoraConfig(r=16, lora_alpha=32,
            target_modules="all-linear"))`, `DataCollatorForSeq2Seq`, batch 8, the Trainer's
            defaults otherwise; trained on tailorlm's tokenization of the same rows (prompt through
            the chat template, loss on the label word and its terminator).
  trl       `trl.SFTTrainer` with its defaults (SFTConfig: no packing, completion-only loss,
            gradient checkpointing on) plus the same LoRA config, on a conversational
            prompt-completion dataset of the same rows (system + prompt / label word).
Every contender: max_steps = the cap, bf16 autocast where tailorlm's `auto` picks bf16, else fp32.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness import Mem
from ttq_common import Held, Tracker

LORA = dict(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")


def held_out(spec: dict) -> Held:
    """The scorer's rows and formatter, from the preset's data config (the same for everyone)."""
    from tailorlm.build import tokenizer_for
    from tailorlm.data.formats import Formatter
    from tailorlm.data.read import read_rows

    cfg = tailorlm_config(spec)
    rows = read_rows(spec["files"]["test"], "stop").rows
    labels = sorted({str(r["label"]) for r in rows + read_rows(spec["files"]["train"], "stop").rows})
    return Held(Formatter("classification", tokenizer_for(cfg), cfg.data, labels), rows, spec["device"],
                spec["precision"])


def tailorlm_config(spec: dict):
    from tailorlm.commands.presets import preset_path
    from tailorlm.config import load_config

    f, cap = spec["files"], spec["cap"]
    over = [f"model.path={spec['model']}", f"data.train={f['train']}", f"data.val={f['val']}",
            f"data.test={f['test']}", f"train.steps={cap}", f"train.lr={spec['lr']}", f"train.device={spec['device']}",
            f"train.precision={spec['precision']}", f"train.eval_every={cap}", f"train.save_every={cap}",
            "eval.before=false", "eval.metrics=[val_loss]", "eval.metric=val_loss", "eval.max_examples=8",
            "retention.reference=null", f"output.dir={spec['work']}/run-tailorlm-{spec['lr']}",
            "output.overwrite=true", "data.audit=false"]
    if spec.get("threads"):
        over.append(f"train.threads={spec['threads']}")
    return load_config(preset_path("airline-lora"), overrides=over + spec.get("tailorlm_overrides", []))


def run_tailorlm(spec: dict, scorer) -> dict:
    from tailorlm.train import Callback, train

    tracker = Tracker(scorer, held_out(spec), spec["every"], spec["cap"], spec["targets"], spec["full"])
    mem = Mem(spec["device"])

    class Timed(Callback):
        def on_start(self, run):
            mem.start()
            tracker.begin(run.model)

        def on_step_end(self, run, rec):
            if tracker.after_step(run.model, run.step):
                run.stop("time_to_quality: every target reached")

    cfg = tailorlm_config(spec)
    out = Path(cfg.output.dir)
    summary = train(cfg, quiet=True, callbacks=[Timed()])
    shutil.rmtree(out, ignore_errors=True)
    return {**tracker.result(), **mem.peak(), "steps_done": summary["steps"],
            "config": {"method": cfg.method.model_dump(), "batch_size": cfg.train.batch_size,
                       "schedule": cfg.train.schedule, "warmup": cfg.train.warmup, "packing": cfg.data.packing}}


def _trainer_callback(tracker: Tracker, mem: Mem):
    from transformers import TrainerCallback

    class Timed(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            mem.start()
            tracker.begin(model)

        def on_step_end(self, args, state, control, model=None, **kw):
            if tracker.after_step(model, state.global_step):
                control.should_training_stop = True

    return Timed()


def _base(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM
    from tailorlm.models.load import load_tokenizer

    torch.manual_seed(spec["seed"])
    tok = load_tokenizer(Path(spec["model_dir"]))   # the pad token tailorlm picks (a user's own choice)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    return model, tok


def _args(spec: dict, out: str) -> dict:
    """What every Trainer-based contender sets; anything else is the library's default."""
    return dict(output_dir=out, max_steps=spec["cap"], learning_rate=spec["lr"], per_device_train_batch_size=8,
                bf16=spec["precision"] == "bf16", use_cpu=spec["device"] == "cpu", report_to=[], save_strategy="no",
                disable_tqdm=True, seed=spec["seed"])


def run_hf(spec: dict, scorer) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from tailorlm.data import build_data

    held = held_out(spec)
    model, tok = _base(spec)
    model = get_peft_model(model, LoraConfig(**LORA))
    data = build_data(tailorlm_config(spec).data, tok, seed=0)   # the same rows, tokenized as tailorlm does
    ds = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels} for e in data.train]
    tracker, mem, out = Tracker(scorer, held, spec["every"], spec["cap"], spec["targets"], spec["full"]), \
        Mem(spec["device"]), tempfile.mkdtemp(dir=spec["work"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    tr = Trainer(model=model, args=TrainingArguments(**_args(spec, out)), train_dataset=ds,
                 data_collator=DataCollatorForSeq2Seq(tok, padding="longest"),
                 callbacks=[_trainer_callback(tracker, mem)])
    tr.train()
    shutil.rmtree(out, ignore_errors=True)
    return {**tracker.result(), **mem.peak(), "steps_done": tr.state.global_step}


def run_trl(spec: dict, scorer) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer
    from tailorlm.data.read import read_rows

    held = held_out(spec)
    model, tok = _base(spec)
    d = tailorlm_config(spec).data
    rows = read_rows(spec["files"]["train"], "stop").rows
    system = [{"role": "system", "content": d.system}] if d.system else []
    ds = datasets.Dataset.from_list([
        {"prompt": system + [{"role": "user", "content": d.prompt_template.format(text=r["text"])}],
         "completion": [{"role": "assistant", "content": str(r["label"])}]} for r in rows])
    tracker, mem, out = Tracker(scorer, held, spec["every"], spec["cap"], spec["targets"], spec["full"]), \
        Mem(spec["device"]), tempfile.mkdtemp(dir=spec["work"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    args = SFTConfig(**_args(spec, out))
    tr = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=LoraConfig(**LORA),
                    callbacks=[_trainer_callback(tracker, mem)])
    tr.train()
    shutil.rmtree(out, ignore_errors=True)
    return {**tracker.result(), **mem.peak(), "steps_done": tr.state.global_step,
            "config": {"gradient_checkpointing": args.gradient_checkpointing, "packing": args.packing,
                       "completion_only_loss": args.completion_only_loss}}


RUNNERS = {"tailorlm": run_tailorlm, "hf": run_hf, "trl": run_trl}
NAMES = {"tailorlm": "tailorlm (preset airline-lora)", "hf": "HF Trainer + PEFT", "trl": "TRL SFTTrainer"}
