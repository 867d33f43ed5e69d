"""The loop on a tiny random Llama and real text: loss falls, runs repeat exactly, artefacts reload."""
import json

import pytest
import torch

from tailorlm.methods import trainable
from tailorlm.train.loop import train
from tailorlm.train.log import read_metrics

from ..conftest import tiny_config


# twelve LoRA steps on text, evaluated and saved at 6 and 12
RUN = ("data.audit=true", "data.max_length=64", "data.val_max=20", "train.steps=12", "train.lr=3e-3",
       "train.warmup=2", "train.eval_every=6", "train.save_every=6", "eval.max_examples=20",
       "retention.reference=auto")


def losses(run):
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_loss_falls_on_real_text_and_the_same_seed_repeats_exactly(tiny_llama, tweets_text_file, tmp_path, method):
    m = {"name": method} if method == "full" else {"name": "lora", "r": 8, "alpha": 16}
    over = {"lr": 3e-2 if method == "lora" else 3e-3, "steps": 30, "eval_every": 15, "save_every": 15}
    s1 = train(tiny_config(tmp_path / "a", tiny_llama, tweets_text_file, *RUN, method=m, train=over), quiet=True)
    s2 = train(tiny_config(tmp_path / "b", tiny_llama, tweets_text_file, *RUN, method=m, train=over), quiet=True)
    l1, l2 = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(l1) == 30 and l1 == l2
    assert sum(l1[-3:]) / 3 < sum(l1[:3]) / 3 - 0.3
    assert s1["final"]["val_loss"] < s1["base"]["val_loss"] - 0.3
    run = tmp_path / "a"
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "final", "summary.json", "base_eval.json"} <= {
        p.name for p in run.iterdir()}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["data"]["format"] == "text"


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_final_loads_with_peft_to_equal_logits(tiny_llama, tweets_text_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tailorlm.run import load_run

    train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN), quiet=True)
    final = tmp_path / "r" / "final"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in final.iterdir()}
    _, ours, _ = load_run(tmp_path / "r")
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(final))
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.randint(5, 300, (2, 17))
    assert torch.allclose(_logits(ours, ids), _logits(theirs, ids), atol=1e-5)
    assert not torch.allclose(_logits(base, ids), _logits(theirs, ids), atol=1e-3)  # the adapter did something


def test_full_final_loads_with_transformers_to_equal_logits(tiny_llama, tweets_text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN, method={"name": "full"})
    train(cfg, quiet=True)
    from tailorlm.run import load_run

    _, ours, _ = load_run(tmp_path / "r")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "r" / "final")
    ids = torch.randint(5, 300, (2, 17))
    assert torch.allclose(_logits(ours, ids), _logits(theirs, ids), atol=1e-5)
    assert not torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(tiny_llama), ids), _logits(theirs, ids), atol=1e-3)


def test_grad_accumulation_normalises_by_all_target_tokens(tiny_llama, tweets_text_file):
    """Two micro-batches of 4 with accumulation give the gradient of one batch of 8: the loss is
    divided by the target tokens of the whole accumulated batch, not averaged per micro-batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailorlm.config import DataConfig
    from tailorlm.data import build_data
    from tailorlm.data.batching import collate
    from tailorlm.forward import lm_loss_sum

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    data = build_data(DataConfig(train=str(tweets_text_file), format="text", max_length=40), tok)
    exs = [data.train[i] for i in (0, 5, 9, 20, 33, 41, 52, 60)]  # different lengths
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)

    def grads(parts):
        model.zero_grad()
        batches = [collate(p, tok.pad_token_id) for p in parts]
        n = sum(b.n_targets for b in batches)
        for b in batches:
            (lm_loss_sum(model, b)[0] / n).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_one, g_acc = grads([exs]), grads([exs[:4], exs[4:]])
    assert torch.allclose(g_one, g_acc, rtol=1e-4, atol=1e-6)


def test_only_the_methods_parameters_are_checkpointed(tiny_llama, tweets_text_file, tmp_path):
    from safetensors.torch import load_file

    train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN), quiet=True)
    ck = sorted((tmp_path / "r" / "checkpoints").glob("step-*"))
    assert [c.name for c in ck] == ["step-000006", "step-000012"]
    names = set(load_file(str(ck[-1] / "trainable.safetensors")))
    assert names and all("lora_" in n for n in names)
