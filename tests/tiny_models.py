"""A tiny random BERT encoder (for classification heads) beside conftest's tiny Llama, and small
helpers the method, export and encoder tests share."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from .conftest import real_tweets, write_jsonl


def make_tiny_bert(out: Path, tok_dir: Path, seed: int = 0) -> Path:
    """A BertModel folder without a head, like all-MiniLM-L6-v2: loading it as a classifier adds one."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    vocab = len(json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=256, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, pad_token_id=0)).save_pretrained(out)
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run on one thread: with two, a busy machine makes every small matmul wait for a
    second core (OpenMP barriers), and a 2-layer model's forward goes from 4 ms to 400 ms."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tiny_tokenizer_dir)


def mixed_tweets(n: int, seed: int = 0) -> list[dict]:
    """n labelled airline tweets with all three labels (the file is ordered, so shuffle first)."""
    rows = real_tweets()
    random.Random(seed).shuffle(rows)
    return rows[:n]


@pytest.fixture(scope="session")
def tweets_cls_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("cls") / "tweets.jsonl", mixed_tweets(300))


def run_config(model_dir: Path, data: Path, out: Path, method: dict, task: str = "causal_lm", **train):
    from tailorlm.config import load_config

    raw = {"model": {"path": str(model_dir), "task": task},
           "data": {"train": str(data), "format": "classification", "max_length": 96, "val_max": 24, "audit": False},
           "method": method,
           "train": {"steps": 4, "batch_size": 4, "lr": 1e-2, "warmup": 0, "precision": "fp32", "seed": 0,
                     "eval_every": train.get("steps", 4), "save_every": train.get("steps", 4), **train},
           "eval": {"max_examples": 24, "batch_size": 8}, "retention": {"reference": None},
           "output": {"dir": str(out), "overwrite": True}}
    return load_config(raw=raw)
