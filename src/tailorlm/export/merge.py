"""`tailorlm export RUN --merge | --adapter --out DIR`: write a run's model for use without tailorlm.

    --merge     one Hugging Face folder with the method folded into the weights (full, the LoRA family,
                IA3, mergeable PEFT methods); plain transformers loads it
    --adapter   the method's own artefact: PEFT's format for PEFT methods (PeftModel.from_pretrained
                loads it), safetensors + JSON for bottleneck adapters (tailorlm reloads them), the
                whole model for full fine-tuning

A method that cannot merge (bottleneck, prompt, prefix) says so and exports its adapter instead.
Either way the export is reloaded from disk and checked against the in-tool model (export/parity.py);
a failed check raises ParityError, and the command exits non-zero.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..errors import RunExistsError
from .parity import ParityError, compare, describe, held_out_prompts, outputs


def _reload_merged(out: Path, task: str):
    """What a user without tailorlm does: transformers alone, from the folder."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    return cls.from_pretrained(str(out), use_safetensors=True)


def export(run_dir: str | Path, out: str | Path, mode: str = "merge", *, atol: float | None = None,
           n_prompts: int = 4, overwrite: bool = False, say=None) -> dict:
    """Export and check; returns the parity report (with `mode` as actually written)."""
    from ..methods import METHODS, NotMergeable
    from ..build import load_base, load_run

    say = say or (lambda s: print(s, file=sys.stderr, flush=True))
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunExistsError(f"{out} is not empty. Fix: another --out, or --overwrite")
        shutil.rmtree(out)
    cfg, model, tok = load_run(run_dir)
    task, name = cfg.model.task, cfg.method.name
    method = METHODS[name]
    if atol is None:   # fp32 merges agree to rounding; bf16 weights round every merged product
        atol = 1e-3 if cfg.model.dtype == "fp32" else 5e-2
    prompts, source = held_out_prompts(cfg, tok, n_prompts)
    ref = outputs(model, prompts, task, tok.pad_token_id)      # before merging, which works in place

    if mode == "merge":
        try:
            merged = method.merge(model)
        except NotMergeable as e:
            say(f"[export] {name} cannot be merged: {e}\n[export] writing the adapter instead")
            mode = "adapter"
    if mode == "merge":
        out.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        reloaded = _reload_merged(out, task)
    else:
        method.save(model, tok, out)
        base, _ = load_base(cfg, tokenizer=tok)
        reloaded = method.load(base, out)
    del model

    rep = compare(ref, outputs(reloaded, prompts, task, tok.pad_token_id), atol)
    rep.update(mode=mode, method=name, out=str(out), prompts_from=source)
    say(f"[export] {name} -> {out} ({'merged Hugging Face folder' if mode == 'merge' else 'adapter'})")
    say(f"[export] {describe(rep, source)}")
    if not rep["ok"]:
        raise ParityError(f"the export in {out} does not reproduce the run's model ({describe(rep, source)})")
    return rep
