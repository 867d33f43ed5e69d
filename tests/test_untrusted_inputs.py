"""Hostile and bad input: pickles are refused unexecuted, secrets stay out of the run, OOM advises."""
import json
import os
import pickle
import shutil

import pytest
import torch

from tailorlm.models.load import ModelError, load_model
from tailorlm.train.loop import train

from .conftest import tiny_config

# these runs keep the library's defaults (base={}, not conftest.TINY): what a user's run does


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this would create the marker file


def _pickled_model_dir(tmp_path, tiny_llama):
    d = tmp_path / "evil"
    d.mkdir()
    for f in tiny_llama.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    marker = tmp_path / "PWNED"
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Exploit(str(marker))}, fh)
    return d, marker


def test_pickled_weights_are_refused_without_being_executed(tmp_path, tiny_llama):
    d, marker = _pickled_model_dir(tmp_path, tiny_llama)
    with pytest.raises(ModelError, match=r"weights are pickled \(pytorch_model.bin\).*Fix: convert them to safetensors"):
        load_model(str(d))
    assert not marker.exists()
    # opting in still goes through torch.load(weights_only=True), which refuses the payload; the refusal is
    # a one-line ModelError, not the unpickler's traceback. (Pickled with protocol 4, torch 2.13's
    # weights-only unpickler stops at the protocol's FRAME opcode, "Unsupported operand 149", before it
    # reaches the payload's global...)
    refused = (r"weights_only=True\) refuses to unpickle \(nothing in them was run\)"
               r".*Fix: convert the weights to safetensors")
    with pytest.raises(ModelError, match=refused) as e:
        load_model(str(d), allow_pickle=True)
    assert "\n" not in str(e.value) and e.value.__cause__ is None
    assert not marker.exists()
    # ...so the same payload in protocol 2 shows that it refuses the global itself: open() is not allowed
    with open(d / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Exploit(str(marker))}, fh, protocol=2)
    with pytest.raises(ModelError, match=refused) as e:
        load_model(str(d), allow_pickle=True)
    unpickler = e.value.__context__   # what torch said, kept for debugging (suppressed from the message)
    assert isinstance(unpickler, pickle.UnpicklingError)
    assert "Unsupported global: GLOBAL io.open was not an allowed" in str(unpickler)
    assert not marker.exists()


def test_a_missing_model_folder_says_what_to_do():
    with pytest.raises(ModelError, match="neither a local folder nor an embedded model.*tailorlm downloads nothing"):
        load_model("meta-llama/Llama-3.2-1B")


def test_secrets_never_reach_any_file_the_run_writes(tmp_path, tiny_llama, tweets_text_file, monkeypatch):
    secret = "hf_s3cr3tVALUE_do_not_log"
    for var in ("HF_TOKEN", "WANDB_API_KEY", "MY_SERVICE_SECRET"):
        monkeypatch.setenv(var, secret)
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, "data.format=text", "data.max_length=32",
                      "data.val_max=4", "train.steps=2", "train.batch_size=2", "train.save_every=1",
                      "train.eval_every=2", "eval.max_examples=4", base={})
    train(cfg, quiet=True)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert len(files) > 8
    for p in files:
        assert secret.encode() not in p.read_bytes(), p


def test_secret_looking_config_values_are_redacted_when_saved():
    from tailorlm.config import redact

    got = redact({"a": {"hub_token": "abc", "api_key": "k", "n_virtual_tokens": 8, "name": "x"}, "b": ["s"]})
    assert got == {"a": {"hub_token": "***", "api_key": "***", "n_virtual_tokens": 8, "name": "x"}, "b": ["s"]}


def test_out_of_memory_suggests_settings_that_fit(tmp_path, tiny_llama, tweets_text_file, monkeypatch):
    from tailorlm import forward

    def oom(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setitem(forward.LOSSES, "causal_lm", oom)
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, "data.format=text", "train.steps=2",
                      "train.batch_size=8", "train.grad_accum=2", "eval.before=false", "retention.reference=null",
                      # loss_chunk off: the plain loss path (forward.LOSSES) is the one this test wraps
                      "train.loss_chunk=null", base={})
    with pytest.raises(MemoryError) as e:
        train(cfg, quiet=True)
    msg = str(e.value)
    assert "train.batch_size=4 train.grad_accum=4" in msg and "train.gradient_checkpointing=true" in msg
