"""`tailorlm export`: merged folders that plain transformers loads in a fresh process, PEFT adapters
that PEFT loads, the clear refusal of methods that cannot merge, and a parity failure that exits 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tailorlm.commands import main
from tailorlm.train.loop import train
from tailorlm.run import load_run

from ..conftest import tiny_config
from ..tiny_models import CLS_RUN, one_thread, tiny_bert, tweets_cls_file  # noqa: F401  (fixtures)

from ..method_cases import EXPORT_CASES as METHODS  # the shared table's export cases (tests/method_cases.py)
from ..method_cases import PEFT_EXPORTS, UNMERGEABLE_EXPORTS


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama, tiny_bert, tweets_cls_file):  # noqa: F811
    """Short runs whose adapters moved away from their identity start: (kind, method) -> run dir."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # module scope runs before the autouse one_thread fixture
    for name, m in METHODS.items():
        out["decoder", name] = root / f"dec-{name}"
        train(tiny_config(out["decoder", name], tiny_llama, tweets_cls_file, *CLS_RUN, method=m, train={"lr": 5e-2}), quiet=True)
    out["encoder", "lora"] = root / "enc-lora"
    train(tiny_config(out["encoder", "lora"], tiny_bert, tweets_cls_file, *CLS_RUN, method=METHODS["lora"],
                      model={"task": "sequence_classification"}, train={"lr": 5e-2}), quiet=True)
    torch.set_num_threads(threads)
    return out


# a fresh interpreter with transformers only: importing tailorlm is made impossible
FRESH = """
import json, sys
sys.modules["tailorlm"] = None
import torch
import transformers as T
path, task, prompt, pad = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
ids = torch.tensor([prompt])
if task == "causal_lm":
    m = T.AutoModelForCausalLM.from_pretrained(path).eval()
    out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                     pad_token_id=pad)
    print(json.dumps(out[0, len(prompt):].tolist()))
else:
    m = T.AutoModelForSequenceClassification.from_pretrained(path).eval()
    print(json.dumps(m.config.id2label[int(m(input_ids=ids).logits.argmax())]))
"""


def in_tool(run, prompt):
    cfg, model, tok = load_run(run)
    model.eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        if cfg.model.task == "causal_lm":
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            return out[0, len(prompt):].tolist(), tok
        return cfg.data.labels[int(model(input_ids=ids).logits.argmax())], tok


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_merged_export_loads_in_a_fresh_process_with_transformers_alone(kind, runs, tmp_path, capsys):
    run, out = runs[kind, "lora"], tmp_path / "merged"
    assert main(["export", str(run), "--merge", "--out", str(out)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["mode"] == "merge" and rep["greedy_agree"] == rep["prompts"] == 4
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    prompt = [5, 60, 61, 62, 63, 64, 65, 66, 67, 68]
    want, tok = in_tool(run, prompt)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    task = "causal_lm" if kind == "decoder" else "sequence_classification"
    got = subprocess.run([sys.executable, "-c", FRESH, str(out), task, json.dumps(prompt), str(tok.pad_token_id)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    assert json.loads(got.stdout.strip().splitlines()[-1]) == want


@pytest.mark.parametrize("name", PEFT_EXPORTS)   # lora, ia3, prompt
def test_peft_adapter_export_loads_with_peft(name, runs, tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    assert main(["export", str(runs["decoder", name]), "--adapter", "--out", str(out)]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(out)).eval()
    _, ours, _ = load_run(runs["decoder", name])
    ids = torch.randint(5, 300, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours.eval()(input_ids=ids).logits)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()(input_ids=ids).logits
    assert (theirs(input_ids=ids).logits[:, -11:] - base).abs().max() > 1e-3   # the adapter does something


def test_encoder_adapter_export_loads_with_peft(runs, tmp_path, tiny_bert):  # noqa: F811
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "adapter"
    assert main(["export", str(runs["encoder", "lora"]), "--adapter", "--out", str(out)]) == 0
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    theirs = PeftModel.from_pretrained(base, str(out)).eval()
    _, ours, _ = load_run(runs["encoder", "lora"])
    ids = torch.randint(5, 300, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours.eval()(input_ids=ids).logits)


@pytest.mark.parametrize("name", UNMERGEABLE_EXPORTS)   # bottleneck, prompt
def test_unmergeable_methods_say_so_and_export_their_adapter(name, runs, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(runs["decoder", name]), "--merge", "--or-adapter", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert f"{name} cannot be merged" in cap.err and "writing the adapter instead" in cap.err
    rep = json.loads(cap.out)
    assert rep["mode"] == "adapter" and rep["ok"] and rep["max_abs_logit_diff"] == 0.0
    files = {p.name for p in out.iterdir()}
    assert ({"adapter.safetensors", "bottleneck.json"} if name == "bottleneck" else {"adapter_config.json"}) <= files


def test_a_failed_parity_check_exits_non_zero(runs, tmp_path, capsys, monkeypatch):
    from tailorlm.export import merge as export_merge

    real = export_merge._reload_merged

    def corrupted(out, task):   # as if the folder were written wrong
        model = real(out, task)
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(1.5)
        return model

    monkeypatch.setattr(export_merge, "_reload_merged", corrupted)
    assert main(["export", str(runs["decoder", "lora"]), "--merge", "--out", str(tmp_path / "x")]) == 1
    assert "parity check failed" in capsys.readouterr().err


def test_export_refuses_to_overwrite(runs, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(runs["decoder", "ia3"]), "--merge", "--out", str(out)]) == 2
    assert (out / "keep.txt").read_text() == "mine"
