"""`tailorlm export RUN --merge | --adapter --out DIR`: write a run's model for use without tailorlm.

    --merge     one Hugging Face folder with the method folded into the weights (full, the LoRA family,
                IA3, mergeable PEFT methods); plain transformers loads it
    --adapter   the method's own artefact: PEFT's format for PEFT methods (PeftModel.from_pretrained
                loads it), safetensors + JSON for bottleneck adapters (tailorlm reloads them), the
                whole model for full fine-tuning

--merge of a method that cannot merge (bottleneck, prompt, prefix) is refused (exit 2), unless
`--or-adapter` asks for its adapter instead. Either way the export is reloaded from disk and checked
against the in-tool model (export/parity.py); a failed check raises ParityError, and the command
exits non-zero.

An export is written into a hidden folder beside --out, checked, marked `.tailorlm-export` (the
files it wrote) and only then renamed into place, so a failure leaves --out as it was. --overwrite
replaces only an export tailorlm wrote and nothing else: never the run itself, a folder inside it or
holding it, the current directory, or a folder holding a file tailorlm did not write; and every check
(the run included) comes before anything is deleted.

Every export carries its use: tailorlm.json (export/use.py: the prompt template, system message,
chat template use and label words training rendered with, the base model and the run), a README.md
model card whose snippet loads and uses it (export/readme.py), a config.json that names the model
rather than the GGUF it was converted from, and the modes the umask gives (0755/0644 under umask
022, not mkdtemp's 0700 or safetensors' 0600). Where an adapter's base is named by a Hub id, the
command says which local folder loads it offline.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..atomic import holds_cwd, replace_dir, share_modes, temp_dir_beside, write_text
from ..errors import RunExistsError, TailorError
from . import use as use_file
from .parity import ParityError, compare, describe, held_out_prompts, outputs
from .readme import offline_fix, write_readme

MARKER = ".tailorlm-export"


class CannotMerge(TailorError, ValueError):
    """--merge of a method whose computation the base weights cannot hold, the fallback not asked for."""


def _reload_merged(out: Path, task: str):
    """What a user without tailorlm does: transformers alone, from the folder."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    return cls.from_pretrained(str(out), use_safetensors=True)


def export(run_dir: str | Path, out: str | Path, mode: str = "merge", *, atol: float | None = None,
           n_prompts: int = 4, overwrite: bool = False, say=None, overrides: list[str] | None = None,
           fallback: bool = False) -> dict:
    """Export and check; returns the parity report (with `mode` as actually written). `overrides`
    apply to the run's stored config before its model loads; `fallback`: an unmergeable method's
    --merge writes its adapter instead of failing."""
    from ..run import RunDir, open_run

    say = say or (lambda s: print(s, file=sys.stderr, flush=True))
    run, out = RunDir(run_dir), Path(out)
    run.config(overrides)                          # a run that is not there fails before anything is touched
    check_out(run.path, out, overwrite)
    opened = open_run(run_dir, overrides)
    cfg, model, tok = opened.cfg, opened.model, opened.tokenizer
    del opened   # (no second reference: the model is freed below, before the reloaded export is run)
    if atol is None:   # fp32 merges agree to rounding; bf16 weights round every merged product
        atol = 1e-3 if cfg.model.dtype == "fp32" else 5e-2
    use = use_file.record(cfg, run, model, tok, mode)   # (before a merge: the base still names its folder)
    prompts, source = held_out_prompts(cfg, tok, n_prompts, use["labels"])
    ref = outputs(model, prompts, cfg.model.task, tok.pad_token_id)      # before merging, which works in place
    tmp = temp_dir_beside(out)
    try:
        mode, reloaded = _write(cfg, model, tok, tmp, mode, fallback, say, use)
        del model
        rep = compare(ref, outputs(reloaded, prompts, cfg.model.task, tok.pad_token_id), atol)
        rep.update(mode=mode, method=cfg.method.name, out=str(out), prompts_from=source, base_model=use["base_model"])
        say(f"[export] {cfg.method.name} -> {out} ({'merged Hugging Face folder' if mode == 'merge' else 'adapter'})")
        say(f"[export] {describe(rep, source)}")
        if not rep["ok"]:
            raise ParityError(f"the export does not reproduce the run's model ({describe(rep, source)}); "
                              f"nothing was written to {out}")
        _carry_use(tmp, {**use, "export": mode}, out, say)
        write_text(tmp / MARKER, json.dumps({"tool": "tailorlm", "run": str(run.path.resolve()),
                                             "mode": mode, "files": sorted(p.name for p in tmp.iterdir())}))
        share_modes(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)     # (already renamed into place when all went well)
    return rep


def _carry_use(tmp: Path, use: dict, out: Path, say) -> None:
    """tailorlm.json and README.md into the checked export; for an adapter whose base is a Hub id, the
    local folder that loads it offline, said (README.md's snippet has it as a commented line)."""
    use_file.write(tmp, use)
    write_readme(tmp, use)
    classes = f"labels {', '.join(use['labels'])}; " if use["labels"] else ""
    say(f"[export] {use_file.FILE}: {use['format']}, {classes}the prompt template and system message training "
        f"used; README.md shows how to load and use it")
    if not (tmp / "config.json").is_file():   # (a whole model has no base to find)
        say(f"[export] {offline_fix(use, tmp, out)}")


def _write(cfg, model, tok, tmp: Path, mode: str, fallback: bool, say, use: dict):
    """The export into `tmp`, and the model reloaded from it as its users will: (mode written, model).
    A whole model's config.json is renamed after the run (use_file.clean_config) before it is reloaded."""
    from ..build import load_base
    from ..methods import METHODS, NotMergeable

    name, method = cfg.method.name, METHODS[cfg.method.name]
    if mode == "merge":
        try:
            merged = method.merge(model)
        except NotMergeable as e:
            if not fallback:
                raise CannotMerge(f"{name} cannot be merged ({e}); nothing was written. Fix: --adapter, or "
                                  "--merge --or-adapter to write the adapter where merging is impossible") from None
            say(f"[export] {name} cannot be merged: {e}\n[export] writing the adapter instead")
            mode = "adapter"
    if mode == "merge":
        merged.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        use_file.clean_config(tmp, use)
        return mode, _reload_merged(tmp, cfg.model.task)
    method.save(model, tok, tmp)
    use_file.clean_config(tmp, use)     # (full fine-tuning's adapter is a whole model)
    base, _ = load_base(cfg, tokenizer=tok)
    return mode, method.load(base, tmp)


def check_out(run_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse, before anything is deleted, an --out that is not an export of tailorlm's to replace."""
    r, o = run_dir.resolve(), out.resolve()
    if o.is_relative_to(r) or r.is_relative_to(o):
        raise RunExistsError(f"--out {out} is the run {run_dir}, inside it or holds it; nothing was written. "
                             "Fix: --out <a folder outside the run>")
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"--out {out} is a file; nothing was written. Fix: another --out")
    if holds_cwd(out):   # (an export is renamed into place: never the folder a shell stands in)
        raise RunExistsError(f"--out {out} is the current directory (or holds it); nothing was written. "
                             "Fix: --out <a folder below it>")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise RunExistsError(f"{out} is not empty. Fix: another --out, or --overwrite")
    try:
        written = set(json.loads((out / MARKER).read_text())["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        raise RunExistsError(f"{out} is not an export tailorlm wrote (no {MARKER}); nothing was deleted. "
                             "Fix: another --out, or empty it yourself") from None
    foreign = sorted(p.name for p in out.iterdir() if p.name not in written)
    if foreign:
        raise RunExistsError(f"{out} holds files tailorlm did not write ({', '.join(foreign[:3])}); nothing was "
                             "deleted. Fix: move them out, or another --out")
