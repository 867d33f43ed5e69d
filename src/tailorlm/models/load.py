"""Load a model and tokenizer from a local Hugging Face folder (or an embedded short name), safely.

Weights load from safetensors only. A folder holding only pickled weights (`*.bin`, `*.pt`) is
refused before anything is unpickled, unless the user opts in with `model.allow_pickle`, and even
then through `torch.load(weights_only=True)`. `trust_remote_code` stays off unless asked.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .defaults import DEFAULT_MODELS, prepare

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


from ..errors import ModelError  # noqa: F401  (raised here; imported from here by callers)


def resolve(path: str) -> Path:
    """Short name -> prepared cache folder; anything else must be a local folder."""
    if path in DEFAULT_MODELS:
        return prepare(path)
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelError(f"model.path: {path!r} is neither a local folder nor an embedded model "
                         f"({', '.join(DEFAULT_MODELS)}). Fix: point model.path at a folder with "
                         "config.json and *.safetensors (tailorlm downloads nothing)")
    if not (p / "config.json").is_file():
        raise ModelError(f"{p}: no config.json; this is not a Hugging Face model folder")
    return p


def check_weights(p: Path, allow_pickle: bool) -> bool:
    """True when the folder has safetensors. Pickled weights alone are refused unless allowed."""
    if any(p.glob("*.safetensors")):
        return True
    pickled = sorted(x.name for x in p.iterdir() if x.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if not pickled:
        raise ModelError(f"{p}: no weight files (*.safetensors)")
    if not allow_pickle:
        raise ModelError(
            f"{p}: weights are pickled ({', '.join(pickled[:3])}); unpickling can run arbitrary code, "
            "so tailorlm refuses it. Fix: convert them to safetensors, or set model.allow_pickle: true "
            "to load them with torch.load(weights_only=True)")
    return False


def load_tokenizer(p: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    set_pad_token(tok)
    return tok


def set_pad_token(tok) -> None:
    """Give the tokenizer a pad token that is not EOS. With pad == EOS, collators that mask pads
    also mask every EOS label and the model never learns to stop (trl#1623). We prefer an existing
    non-EOS special token, so the vocabulary (and the embedding matrix) keeps its size."""
    if tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id:
        return
    for cand in (tok.unk_token, "<|endoftext|>", "<pad>", "<|pad|>", "[PAD]"):
        if cand and cand != tok.eos_token and cand in tok.get_vocab():
            tok.pad_token = cand
            return
    tok.add_special_tokens({"pad_token": "<|pad|>"})  # the model's embeddings are resized on load


def load_model(path: str, *, dtype: str = "fp32", task: str = "causal_lm", trust_remote_code: bool = False,
               allow_pickle: bool = False, tokenizer=None, labels: list[str] | None = None):
    """(model, tokenizer) from a folder or short name. The builder takes flat arguments. `labels`
    names a classification head's classes (and sets num_labels)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    p = resolve(path)
    safe = check_weights(p, allow_pickle)
    tok = tokenizer or load_tokenizer(p, trust_remote_code)
    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    kwargs = dict(dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=safe)
    if labels:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={lab: i for i, lab in enumerate(labels)})
    if not safe:
        _guard_torch_load()
    model = cls.from_pretrained(str(p), **kwargs)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    if getattr(model.config, "pad_token_id", None) is None or task == "sequence_classification":
        # a decoder's classification head pools the last token that is not config.pad_token_id, so it
        # must be the id batches are padded with (SmolLM2's config says EOS, its tokenizer pads with 0)
        model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _guard_torch_load() -> None:
    """Make every torch.load inside transformers use weights_only=True (its default since 2.6;
    asserted here rather than trusted)."""
    import inspect

    default = inspect.signature(torch.load).parameters["weights_only"].default
    if default is not None and default is not True:
        raise ModelError("this torch build defaults torch.load to weights_only=False; refusing pickled weights")
