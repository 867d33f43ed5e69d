"""Hostile folders and secrets through the command line (issue 13): code shipped in a model folder
never runs (not even with `echo y |` on stdin), API tokens in data are flagged and never echoed,
refusals are one line, and the audit passes only what training accepts."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tailorlm.audit import pii
from tailorlm.errors import ModelError
from tailorlm.models.load import load_model

from ..conftest import tiny_config, write_jsonl
from ..commands.test_cli import ENV, ONE_STEP, cli, user_error

MARKER_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
class EvilConfig(LlamaConfig):
    model_type = "evilmodel"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""
TOKENS = {"hf": "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "openai": "sk-proj-Abc123Def456Ghi789Jkl012Mno",
          "aws": "AKIAIOSFODNN7EXAMPLE", "github": "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
          "github_pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv"}
KEY_BLOCK = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75abcdefghij\n-----END RSA PRIVATE KEY-----"


def code_folder(tmp_path: Path, tiny_llama: Path, part: str) -> tuple[Path, Path]:
    """A copy of the tiny model whose tokenizer (part="tokenizer") or model (part="model") is code
    shipped in the folder, code that creates a marker file when it runs."""
    d, marker = tmp_path / f"code-{part}", tmp_path / "MARKER"
    shutil.copytree(tiny_llama, d)
    (d / "evil.py").write_text(MARKER_CODE.format(marker=str(marker)))
    config = json.loads((d / "config.json").read_text())
    config.update(model_type="evilmodel", auto_map={"AutoConfig": "evil.EvilConfig",
                                                    "AutoModelForCausalLM": "evil.EvilModel"})
    (d / "config.json").write_text(json.dumps(config))
    if part == "tokenizer":
        tc = json.loads((d / "tokenizer_config.json").read_text())
        tc.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil.EvilTokenizer"] * 2})
        (d / "tokenizer_config.json").write_text(json.dumps(tc))
    return d, marker


def tailorlm(*argv, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tailorlm", *map(str, argv)], input=stdin, env=ENV,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- 13.2: the folder's code never runs

def test_the_audit_never_runs_code_from_a_model_folder_even_when_stdin_says_yes(tmp_path, tiny_llama):
    folder, marker = code_folder(tmp_path, tiny_llama, "tokenizer")
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": f"tweet {i} about a delayed flight"} for i in range(8)])
    got = tailorlm("audit", data, "--model", folder, stdin="y\ny\ny\n")
    assert not marker.exists()
    assert got.returncode == 2 and "model.trust_remote_code: true" in got.stdout, got.stdout + got.stderr
    assert "Do you wish to run the custom code" not in got.stdout + got.stderr


def test_code_in_a_model_folder_is_refused_in_one_line(tmp_path, tiny_llama):
    folder, marker = code_folder(tmp_path, tiny_llama, "model")
    got = tailorlm("generate", folder, "--prompt", "hi", stdin="y\n")
    assert not marker.exists() and got.returncode == 2 and "Traceback" not in got.stderr, got.stderr
    assert got.stderr.count("\n") == 1 and "the model needs Python code" in got.stderr


# ---------------------------------------------------------------- 13.10: refusals are one line

def test_a_folder_without_a_tokenizer_names_the_folder_and_the_fix(tmp_path, tiny_llama, capsys):
    d = tmp_path / "no-tok"
    d.mkdir()
    shutil.copy(tiny_llama / "config.json", d)
    user_error(capsys, ["generate", d, "--prompt", "hi"], str(d), "no weight files", "Fix")
    shutil.copy(tiny_llama / "model.safetensors", d)
    user_error(capsys, ["generate", d, "--prompt", "hi"], str(d), "no tokenizer files",
               "Fix: save the model's tokenizer")


def test_pickled_weights_refused_with_allow_pickle_are_one_line(tmp_path, tiny_llama, tweets_text_file, capsys):
    from ..test_untrusted_inputs import _pickled_model_dir

    d, marker = _pickled_model_dir(tmp_path, tiny_llama)
    cfg = tiny_config(tmp_path / "run", d, tweets_text_file, *ONE_STEP, file=tmp_path / "c.yaml",
                      model={"allow_pickle": True}, data={"audit": False})
    user_error(capsys, ["train", cfg], "weights_only", "Fix: convert the weights to safetensors")
    assert not marker.exists()


def test_a_bad_yaml_override_is_one_line(tmp_path, tiny_llama, tweets_text_file, capsys):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *ONE_STEP, file=tmp_path / "c.yaml")
    user_error(capsys, ["train", cfg, "method.targets=[q_proj"], "method.targets", "not a valid YAML value", "Fix")


# ---------------------------------------------------------------- 13.9: secrets in data

@pytest.mark.parametrize("kind", sorted(TOKENS) + ["private_key"])
def test_api_token_shapes_are_secrets_and_masked(kind):
    value = KEY_BLOCK if kind == "private_key" else TOKENS[kind]
    text = f"please use {value} for the login"
    hits = pii.find_pii(text)
    assert [(h[0], h[3]) for h in hits] == [("secret", value)]
    masked = pii.mask_text(text)
    assert value not in masked and masked.endswith("*** for the login") and pii.mask_text(masked) == masked


def test_near_misses_are_not_secrets():
    assert pii.find_pii("call hf_hub_download, the desk-lamp sk-short and AKIA1234") == []


def secret_rows(tmp_path: Path) -> Path:
    rows = [{"text": f"my key is {TOKENS['hf']} please help"}] * 3
    rows += [{"text": f"tweet {i} about a late bag and {i} lost suitcases"} for i in range(12)]
    return write_jsonl(tmp_path / "t.jsonl", rows)


def test_the_audit_never_echoes_a_secret(tmp_path, capsys):
    data = secret_rows(tmp_path)
    rc, out, _ = cli(capsys, "audit", data, "--json", tmp_path / "a.json", "--redact", tmp_path / "red.jsonl")
    report = (tmp_path / "a.json").read_text()
    assert rc == 0 and TOKENS["hf"] not in out + report and "hf_***" in out
    assert json.loads(report)["stats"]["pii"]["secret"] == {"rows": 3, "occurrences": 3}
    assert "[SECRET]" in (tmp_path / "red.jsonl").read_text() and TOKENS["hf"] in data.read_text()


def test_training_never_echoes_a_secret_from_its_data(tmp_path, tiny_llama, capsys):
    data = secret_rows(tmp_path)
    with open(data, "a") as fh:
        fh.write("{not json\n")                               # a fatal audit: train prints its summary
    cfg = tiny_config(tmp_path / "run", tiny_llama, data, *ONE_STEP, file=tmp_path / "c.yaml")
    rc, out, err = cli(capsys, "train", cfg)
    assert rc == 2 and "hf_***" in err and TOKENS["hf"] not in out + err
    assert TOKENS["hf"] not in (tmp_path / "run" / "audit.json").read_text()


def test_generated_samples_on_the_console_never_echo_a_secret(capsys):
    from types import SimpleNamespace

    from tailorlm.train.callbacks import Console

    smp = {"step": 5, "prompt": f"log in with {TOKENS['hf']}", "generated": "done", "reference": TOKENS["openai"]}
    run = SimpleNamespace(step=5, base_scores=None, samples=[smp])   # (what a callback sees: train/view.py)
    Console().on_eval(run, {"val_loss": 1.0}, SimpleNamespace(improved=False, warnings=[]))
    err = capsys.readouterr().err
    assert "sample: 'log in with hf_***'" in err and TOKENS["hf"] not in err and TOKENS["openai"] not in err


# ---------------------------------------------------------------- 13.11: the audit passes only what trains

def test_the_audit_fails_a_file_the_trainer_rejects(tmp_path, tiny_llama, capsys):
    rows = [{"text": f"tweet {i} about a late bag and {i} lost suitcases"} for i in range(12)]
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    with open(data, "a") as fh:
        fh.write("{not json\n")
    rc, out, _ = cli(capsys, "audit", data)
    assert rc == 2 and "t.jsonl:13: bad JSON" in out              # training's own file:line message
    cfg = tiny_config(tmp_path / "run", tiny_llama, data, *ONE_STEP, file=tmp_path / "c.yaml", data={"audit": False})
    assert cli(capsys, "train", cfg)[0] == 2                    # the trainer agrees
    assert cli(capsys, "audit", data, "--on-error", "skip")[0] == 0
