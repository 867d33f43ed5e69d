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


# four steps on classification data, evaluated and saved at the last (a test that sets train.steps
# sets eval_every and save_every to match)
CLS_RUN = ("data.format=classification", "data.max_length=96", "data.val_max=24", "train.steps=4",
           "train.eval_every=4", "train.save_every=4", "train.log_every=10", "eval.max_examples=24",
           "eval.batch_size=8", "output.overwrite=true")
