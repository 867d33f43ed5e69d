"""Load a model and tokenizer from a local Hugging Face folder (or an embedded short name), safely.

This is the one place tailorlm turns a folder into a model, a tokenizer or a config, so the rules hold
for every command (train, eval, generate, export, audit, methods):

- Weights load from safetensors only. Every weights file tailorlm reads follows this: a base model
  folder holding only pickled weights (`*.bin`, `*.pt`), and a run's final/ (an adapter, or a model)
  holding any, are refused before anything is unpickled, unless the user opts in with
  `model.allow_pickle`, and even then through `torch.load(weights_only=True)`, whose refusal is one
  line too. (Checkpoints are tailorlm's own format: safetensors, optimizer.pt under weights_only,
  DCP's pickles through restricted unpicklers; train/checkpoint*.py.)
- `trust_remote_code` is passed to transformers as an explicit bool, never None: with None,
  transformers asks on stdin whether to run the folder's code, and `echo y |` would answer it.
- Every refusal (pickles, remote code, a folder without a tokenizer, an encoder asked to be a
  causal LM) is a ModelError: one line naming the folder and the fix, no traceback.
"""
from __future__ import annotations

import contextlib
import json
import pickle
from pathlib import Path

import torch

from ..errors import ModelError  # noqa: F401  (raised here; imported from here by callers)
from .arch import ARCHS
from .defaults import DEFAULT_MODELS, prepare

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")
PICKLED = (".bin", ".pt", ".pth", ".ckpt")   # weights files that unpickle
TRUST_MARK = "tailorlm_trust_remote_code"   # set on loaded models: what later loads of the same folder may do


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
        raise ModelError(f"{p}: no config.json; this is not a Hugging Face model folder. Fix: point model.path "
                         "at the folder that holds the model's config.json")
    return p


def pickled_files(p: Path) -> list[str]:
    return sorted(x.name for x in p.iterdir() if x.suffix in PICKLED) if p.is_dir() else []


def check_weights(p: Path, allow_pickle: bool) -> bool:
    """True when the folder has safetensors. Pickled weights alone are refused unless allowed."""
    if any(p.glob("*.safetensors")):
        return True
    if not pickled_files(p):
        raise ModelError(f"{p}: no weight files (*.safetensors). Fix: save the model into this folder "
                         "(model.save_pretrained(folder) writes safetensors)")
    check_pickles(p, allow_pickle)
    return False


def check_pickles(p: Path, allow_pickle: bool) -> None:
    """Refuse a folder holding pickled weights unless model.allow_pickle: a base model holding only
    those (check_weights), or a run's final/ holding any (tailorlm writes safetensors there, and a
    loader may prefer the pickle: PEFT reads adapter_model.bin when adapter_model.safetensors is gone)."""
    pickled = pickled_files(p)
    if pickled and not allow_pickle:
        raise ModelError(
            f"{p}: weights are pickled ({', '.join(pickled[:3])}); unpickling can run arbitrary code, "
            "so tailorlm refuses it. Fix: convert them to safetensors, or set model.allow_pickle: true "
            "to load them with torch.load(weights_only=True)")


def load_pickled(f: Path) -> dict:
    """Pickled weights the user allowed (model.allow_pickle): torch.load(weights_only=True), whose
    refusal is a one-line ModelError."""
    with refusals(f.parent, "weights"):
        return torch.load(f, weights_only=True, map_location="cpu")


def check_task(p: Path, task: str) -> None:
    """Refuse an encoder (BERT-like) as a causal LM. transformers would load it with a new random LM
    head and only a warning, and the run would train a language model out of an encoder: silent
    wrong work. Read from config.json (no code runs), before any data or weights are read."""
    if task != "causal_lm":
        return
    try:
        mtype = json.loads((p / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise ModelError(f"{p}/config.json cannot be read ({e}). Fix: restore the model's config.json") from None
    if mtype in ARCHS and ARCHS[mtype].encoder:
        raise ModelError(f"{p} is an encoder ({mtype}), which cannot generate text, and model.task is causal_lm. "
                         "Fix: model.task: sequence_classification (a classification head over data.labels), "
                         "or a decoder model")


@contextlib.contextmanager
def refusals(p: Path, what: str):
    """transformers' and torch's refusals, as one-line ModelErrors: code shipped in the folder
    (trust_remote_code off), and pickles that torch.load(weights_only=True) will not unpickle."""
    try:
        yield
    except pickle.UnpicklingError:
        names = f" ({', '.join(pickled_files(p)[:3])})" if pickled_files(p) else ""
        raise ModelError(f"{p}: the pickled weights{names} hold code or objects that torch.load(weights_only=True) "
                         "refuses to unpickle (nothing in them was run). Fix: convert the weights to safetensors "
                         "where you trust the file") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise ModelError(f"{p}: the {what} needs Python code shipped in the folder, which tailorlm does not run "
                         "unless asked. Fix: read the folder's *.py files, and set model.trust_remote_code: true "
                         "only if you trust them") from None


def load_tokenizer(p: Path, trust_remote_code: bool = False):
    """The folder's tokenizer, with a pad token that is not EOS (set_pad_token)."""
    from transformers import AutoTokenizer

    p = Path(p)
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{p}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...). Fix: save the model's "
                         f"tokenizer into the folder (tokenizer.save_pretrained('{p}'))")
    with refusals(p, "tokenizer"):
        try:
            tok = AutoTokenizer.from_pretrained(str(p), trust_remote_code=bool(trust_remote_code))
        except (OSError, TypeError) as e:
            raise ModelError(f"{p}: the tokenizer cannot be loaded ({str(e).splitlines()[0]}). Fix: save the "
                             f"model's tokenizer into the folder (tokenizer.save_pretrained('{p}'))") from None
    set_pad_token(tok)
    return tok


def tokenizer_from(name_or_path: str, trust_remote_code: bool = False):
    """A tokenizer from a folder or an embedded short name (what `tailorlm audit --model` takes)."""
    return load_tokenizer(resolve(str(name_or_path)), trust_remote_code)


def load_hf_config(path: str, trust_remote_code: bool = False):
    """The folder's transformers config (for a weightless skeleton), under the same refusals."""
    from transformers import AutoConfig

    p = resolve(path)
    with refusals(p, "config"):
        return AutoConfig.from_pretrained(str(p), trust_remote_code=bool(trust_remote_code))


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
    check_task(p, task)
    safe = check_weights(p, allow_pickle)
    tok = tokenizer or load_tokenizer(p, trust_remote_code)
    cls = AutoModelForSequenceClassification if task == "sequence_classification" else AutoModelForCausalLM
    kwargs = dict(dtype=DTYPES[dtype], trust_remote_code=bool(trust_remote_code), use_safetensors=safe)
    if labels:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={lab: i for i, lab in enumerate(labels)})
    if not safe:
        _guard_torch_load()
    with refusals(p, "model"):
        model = cls.from_pretrained(str(p), **kwargs)
    setattr(model, TRUST_MARK, bool(trust_remote_code))
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
