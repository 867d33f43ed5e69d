"""Exports that carry their use: tailorlm.json (prompt template, system message, label words, base,
run) beside the weights, a README whose snippet runs offline without tailorlm and scores as the run
does, a config.json named after the run rather than the GGUF, the offline fix for an adapter whose base
is a Hub id, and the modes the umask gives."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tailorlm.commands import main
from tailorlm.data import Formatter
from tailorlm.data.formats import LABELS_PROMPT
from tailorlm.eval.tasks import LABEL_SCORES
from tailorlm.export import export
from tailorlm.run import load_run
from tailorlm.train.loop import train

from ..conftest import tiny_config
from ..tiny_models import CLS_RUN, mixed_tweets, one_thread, tiny_bert, tweets_cls_file  # noqa: F401  (fixtures)

GGUF_NAME = "Smollm2 135M 8k Lc100K Mix1 Ep2"     # what the converted SmolLM2's config.json carries
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SYSTEM = "You label airline tweets."
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_llama):
    """A TAILORLM_CACHE whose embedded smollm2-135m-instruct is the tiny Llama, its config.json holding
    the GGUF's internal name as the real conversion's does: a base the adapter names by a Hub id."""
    root = tmp_path_factory.mktemp("cache")
    folder = shutil.copytree(tiny_llama, root / "models" / "smollm2-135m-instruct")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "_model_name_or_path": GGUF_NAME}))
    return root


@pytest.fixture(autouse=True)
def embedded(cache, monkeypatch):
    monkeypatch.setenv("TAILORLM_CACHE", str(cache))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, cache, tiny_bert, tweets_cls_file):  # noqa: F811
    """A decoder classifier on the "embedded" base and an encoder classifier head on a local folder,
    each exported merged and as an adapter under umask 022: (kind, mode) -> (run, export folder)."""
    root, out = tmp_path_factory.mktemp("use"), {}
    threads, mask = torch.get_num_threads(), os.umask(0o022)
    torch.set_num_threads(1)   # module scope runs before the autouse one_thread fixture
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TAILORLM_CACHE", str(cache))
            for kind, model, task in (("decoder", "smollm2-135m-instruct", "causal_lm"),
                                      ("encoder", tiny_bert, "sequence_classification")):
                run = root / f"run-{kind}"
                train(tiny_config(run, model, tweets_cls_file, *CLS_RUN, "data.prompt_template=auto",
                                  f"data.system={SYSTEM}", "data.max_length=128", model={"task": task},
                                  train={"lr": 5e-2}), quiet=True)
                for mode in ("merge", "adapter"):
                    out[kind, mode] = run, root / f"{kind}-{mode}"
                    export(run, out[kind, mode][1], mode, say=lambda s: None)
    finally:
        os.umask(mask)
        torch.set_num_threads(threads)
    return out


def fitting_rows(run, n=4):
    """Held-out style rows whose whole prompt fits max_length (nothing cut, as a README user's would)."""
    cfg, _, tok = load_run(run)
    fm = Formatter("classification", tok, cfg.data, LABELS)
    rows = [r for r in mixed_tweets(300, seed=7)
            if len(tok(fm.prompt_text(fm.wrap(r["text"])))["input_ids"]) + 8 <= cfg.data.max_length]
    return rows[:n]


def in_tool(run, rows):
    """[(label, {label: probability})] per row, as tailorlm itself scores the run's final model."""
    cfg, model, tok = load_run(run)
    fm = Formatter("classification", tok, cfg.data, LABELS)
    _, scores = LABEL_SCORES[cfg.model.task](model, fm, rows, device="cpu", precision="fp32", batch_size=4)
    return [(LABELS[int(p.argmax())], dict(zip(LABELS, p.tolist()))) for p in scores.softmax(1)]


def rebuilt(folder: Path, rows):
    """The same, from the export and tailorlm.json alone: transformers (and PEFT), no tailorlm."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    use = json.loads((folder / "tailorlm.json").read_text())
    tok, head = AutoTokenizer.from_pretrained(folder), use["task"] == "sequence_classification"
    auto, extra = (AutoModelForSequenceClassification, {"num_labels": 3}) if head else (AutoModelForCausalLM, {})
    if (folder / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(auto.from_pretrained(use["base_model"]["local"], **extra), folder)
    else:
        model = auto.from_pretrained(folder)
    model.eval()
    out = []
    for row in rows:
        prompt = use["prompt_template"].format(text=row["text"], labels=", ".join(use["labels"]))
        with torch.no_grad():
            if head:
                probs = model(**tok(prompt, return_tensors="pt")).logits[0].softmax(-1)
            else:
                turns = [{"role": "system", "content": use["system"]}, {"role": "user", "content": prompt}]
                ids = tok(tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False).input_ids
                scores = []
                for label in use["labels"]:
                    word = tok(label, add_special_tokens=False).input_ids
                    lp = model(input_ids=torch.tensor([ids + word])).logits[0, len(ids) - 1:-1].log_softmax(-1)
                    scores.append(lp[torch.arange(len(word)), word].sum())
                probs = torch.stack(scores).softmax(0)
        out.append((use["labels"][int(probs.argmax())], dict(zip(use["labels"], probs.tolist()))))
    return out


def assert_same(got, want):
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, g), (_, w) in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)


@pytest.mark.parametrize("mode", ["merge", "adapter"])
@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_tailorlm_json_holds_the_rendering_and_rebuilds_the_classifier(kind, mode, exports, cache):
    run, folder = exports[kind, mode]
    use = json.loads((folder / "tailorlm.json").read_text())
    # (a classifier head reads the bare text: auto's label-naming prompt is for a model answering in words)
    assert use["prompt_template"] == (LABELS_PROMPT if kind == "decoder" else "{text}") and use["system"] == SYSTEM and use["labels"] == LABELS
    assert use["export"] == mode and use["format"] == "classification" and use["max_length"] == 128
    assert use["run"] == str(run.resolve()) and use["method"] == "lora"
    if kind == "decoder":
        assert use["chat_template"] is True and use["scoring"] == "label_likelihood"
        assert use["base_model"] == {"reference": HUB_ID, "local": str(cache / "models" / "smollm2-135m-instruct")}
    else:
        assert use["scoring"] == "head" and use["base_model"]["reference"] == use["base_model"]["local"]
    rows = fitting_rows(run)
    assert len(rows) == 4
    assert_same(rebuilt(folder, rows), in_tool(run, rows))


# a fresh interpreter without tailorlm, offline: runs README.md's snippet, then classifies argv's texts
FRESH = """
import json, sys
sys.modules["tailorlm"] = None
exec(compile(open(sys.argv[1]).read(), "README.md", "exec"))
print(json.dumps([classify(t) for t in json.loads(sys.argv[2])]))
"""


@pytest.mark.parametrize("mode", ["merge", "adapter"])
@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_the_readme_snippet_runs_offline_and_scores_as_the_run(kind, mode, exports, tmp_path):
    run, folder = exports[kind, mode]
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nbase_model: ")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert '"path/to/this/folder"' in code
    code = code.replace('"path/to/this/folder"', json.dumps(str(folder)))
    if (kind, mode) == ("decoder", "adapter"):   # the base named by a Hub id: the snippet's offline line
        assert f'base_path = "{HUB_ID}"' in code and "\n# base_path = " in code
        code = code.replace("\n# base_path = ", "\nbase_path = ")
    (tmp_path / "snippet.py").write_text(code)
    rows = fitting_rows(run)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    got = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "snippet.py"),
                          json.dumps([r["text"] for r in rows])],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    lines = got.stdout.strip().splitlines()
    assert lines[0].startswith("('")                # the snippet's own example printed a (label, probabilities)
    assert_same([tuple(x) for x in json.loads(lines[-1])], in_tool(run, rows))


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_a_merged_config_names_the_run_not_the_gguf(kind, exports):
    run, folder = exports[kind, "merge"]
    cfg = json.loads((folder / "config.json").read_text())
    assert "_model_name_or_path" not in cfg and GGUF_NAME not in json.dumps(cfg)
    name = cfg["_name_or_path"]
    assert run.name in name and "lora" in name
    assert (HUB_ID if kind == "decoder" else "tiny-bert") in name


def modes(folder: Path) -> set[tuple[str, str]]:
    return {("dir" if p.is_dir() else "file", oct(p.stat().st_mode & 0o777)) for p in [folder, *folder.rglob("*")]}


@pytest.mark.parametrize("mode", ["merge", "adapter"])
def test_exports_are_readable_under_umask_022(mode, exports):
    assert modes(exports["decoder", mode][1]) == {("dir", "0o755"), ("file", "0o644")}


def test_export_follows_a_stricter_umask_and_prints_the_offline_fix(exports, cache, tmp_path, capsys):
    run, out = exports["decoder", "adapter"][0], tmp_path / "adapter"
    mask = os.umask(0o027)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            assert main(["export", str(run), "--adapter", "--out", str(out)]) == 0
    finally:
        os.umask(mask)
    assert not [w for w in said if HUB_ID in str(w.message)]   # saving the adapter asked nothing of the Hub
    assert modes(out) == {("dir", "0o750"), ("file", "0o640")}
    err = capsys.readouterr().err
    local = str(cache / "models" / "smollm2-135m-instruct")
    assert f"Hub id {HUB_ID}, which needs the network" in err
    assert f'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{local}"), "{out}")' in err
    assert "tailorlm models prepare smollm2-135m-instruct" in err
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == HUB_ID   # (what works elsewhere, online, stays named)


def test_parity_prompts_name_the_label_words(exports):
    """The parity check's held-out prompts are rendered as training rendered them: `{labels}` filled
    with the run's label words (they were empty where data.labels was unset)."""
    from tailorlm.export.parity import held_out_prompts

    cfg, _, tok = load_run(exports["decoder", "merge"][0])
    prompts, source = held_out_prompts(cfg, tok, 2)
    assert source == "the validation split of data.train"
    assert all(f"one of: {', '.join(LABELS)}." in tok.decode(ids) for ids in prompts)


# the same for a model that generates: README.md's `answer` after its snippet has run
GENERATE = """
import json, sys
exec(compile(open(sys.argv[1]).read(), "README.md", "exec"))
print(json.dumps([answer(t, 8) for t in json.loads(sys.argv[2])]))
"""


@pytest.mark.parametrize("method, mode", [("lora", "merge"), ("bottleneck", "adapter")])
def test_the_readme_snippet_of_a_text_run_generates_as_the_run(method, mode, tiny_llama, tweets_text_file, tmp_path):
    from tailorlm.data.tokenize import bos_prefix

    run, out = tmp_path / "run", tmp_path / "export"
    how = {"name": "lora", "r": 4, "alpha": 8} if method == "lora" else {"name": "bottleneck", "reduction_factor": 8}
    train(tiny_config(run, tiny_llama, tweets_text_file, method=how, train={"lr": 5e-2}), quiet=True)
    export(run, out, mode, say=lambda s: None)
    use = json.loads((out / "tailorlm.json").read_text())
    assert use["format"] == "text" and use["labels"] is None and use["scoring"] is None
    code = re.search(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S).group(1)
    (tmp_path / "snippet.py").write_text(code.replace('"path/to/this/folder"', json.dumps(str(out))))
    texts = ["The flight was delayed for three hours and", "Thank you for your help today,"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    got = subprocess.run([sys.executable, "-c", GENERATE, str(tmp_path / "snippet.py"), json.dumps(texts)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    _, model, tok = load_run(run)
    want = []
    for text in texts:
        ids = torch.tensor([bos_prefix(tok) + tok(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            gen = model.eval().generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                        do_sample=False, pad_token_id=tok.pad_token_id)
        want.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    assert json.loads(got.stdout.strip().splitlines()[-1]) == want and any(want)
