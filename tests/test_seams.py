"""The seams the loop offers to what is built beside it: layers that only point down, evaluators
registered from outside, callbacks that see every step and evaluation, runs that start from a given
model, and the typed method contract."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tailorlm.run import build, load_run
from tailorlm.config import load_config
from tailorlm.eval.evaluators import EVALUATORS
from tailorlm.eval.specs import MetricSpec, declares
from tailorlm.methods import METHODS, Method
from tailorlm.train import Callback, train
from tailorlm.train.log import read_metrics

from .conftest import tiny_config
from .tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

SRC = Path(__file__).resolve().parents[1] / "src" / "tailorlm"

# The order a reader should see: each module imports only from its own rank or the ranks before it.
# (config composes the method configs each method file declares, so methods come before config.)
LAYERS = [
    {"errors", "atomic", "progress", "html_page"},
    {"data", "models"},
    {"methods"},
    {"config"},
    {"audit"},
    {"forward", "device", "seed", "build", "plan", "objectives"},   # objectives: dpo, simpo (a batch -> a loss)
    {"run"},      # the run folder (RunDir, its lock) and a finished run opened: what scores or continues one
    {"eval"},
    {"probes"},   # the probes register their evaluators into eval's registry (probes/evaluators.py)
    {"retention", "export", "report"},
    {"train"},
    {"continual", "compare"},
    {"commands", "demo", "__main__", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _imports(path: Path, rel: tuple[str, ...]):
    """(line, imported tailorlm top-level name) for every import in the file, function bodies too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[:-1])[: len(rel) - node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module or base else [a.name for a in node.names]
            elif (node.module or "").startswith("tailorlm"):
                mod = node.module.removeprefix("tailorlm").lstrip(".")
                names = [mod] if mod else [a.name for a in node.names]
            else:
                continue
            for n in names:
                yield node.lineno, n.split(".")[0]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tailorlm."):
                    yield node.lineno, a.name.split(".")[1]


def test_imports_only_point_down():
    up, unplaced = [], []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).parts
        top = rel[0].removesuffix(".py")
        if top not in RANK:
            unplaced.append(top)
            continue
        for line, target in _imports(f, rel):
            target = target.removesuffix(".py")
            if target not in RANK:
                unplaced.append(target)
            elif RANK[target] > RANK[top]:
                up.append(f"{'/'.join(rel)}:{line} imports {target}")
    assert not unplaced, f"modules not placed in a layer: {sorted(set(unplaced))}"
    assert not up, "imports that point up:\n" + "\n".join(up)


def _package_graph() -> dict[str, set[str]]:
    """Top-level module -> the other top-level modules it imports (function bodies too)."""
    graph: dict[str, set[str]] = {}
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).parts
        top = rel[0].removesuffix(".py")
        graph.setdefault(top, set()).update(t.removesuffix(".py") for _, t in _imports(f, rel))
        graph[top].discard(top)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle between top-level modules, each once (a depth-first search's back edges)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_two_top_level_modules_import_each_other():
    """Same-rank modules may import each other by the layer rule; a cycle between them (build -> run ->
    build) still makes neither readable alone, so the package graph has none."""
    cycles = _cycles(_package_graph())
    assert not cycles, "import cycles between top-level modules:\n" + "\n".join(" -> ".join(c) for c in cycles)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_direction_test_catches_an_upward_import(tmp_path):
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from ..train.loop import train\n")
    assert list(_imports(f, ("eval", "probe.py"))) == [(2, "train")]


def test_every_method_satisfies_the_typed_contract():
    for name, m in METHODS.items():
        assert isinstance(m, Method), name
        assert m.Config.model_config.get("extra") == "forbid", name


RUN = ("data.val_max=12", "train.steps=6", "train.warmup=1", "train.save_every=3", "eval.max_examples=12",
       "retention.reference=auto", "retention.samples=4", "retention.sample_tokens=16")


@declares(logit_abs_mean=MetricSpec("info", "logit", 0.0))
def head_logit_norm(model, ctx) -> dict:
    """An evaluator from outside tailorlm: the mean absolute logit on the first validation example
    (its metric's spec declared, as every evaluator's must be)."""
    ids = torch.tensor([ctx.data.val[0].input_ids], device=ctx.device)
    with torch.no_grad():
        return {"logit_abs_mean": float(model(input_ids=ids).logits.abs().mean())}


def test_an_evaluator_registered_from_outside_is_scored_with_deltas(tiny_llama, tweets_text_file, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setitem(EVALUATORS, "logit_norm", head_logit_norm)
    s = train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN,
                          eval={"metrics": ["val_loss", "logit_norm"]}),
              quiet=True)
    evals = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    base = s["base"]["logit_abs_mean"]
    for r in evals:
        assert r["delta"]["logit_abs_mean"] == pytest.approx(r["eval"]["logit_abs_mean"] - base)
        assert "ref_nll" not in r["eval"] and "val_loss" in r["eval"]      # only what eval.metrics chose
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    cfg, tuned, _ = load_run(tmp_path / "r")
    ctx = SimpleNamespace(data=build(cfg)[2], device="cpu")
    assert summary["final"]["logit_abs_mean"] == pytest.approx(head_logit_norm(tuned.eval(), ctx)["logit_abs_mean"],
                                                               rel=1e-5)
    assert summary["delta"]["logit_abs_mean"] == pytest.approx(summary["final"]["logit_abs_mean"] - base)
    assert summary["delta"]["logit_abs_mean"] != 0


def test_an_evaluator_named_by_import_path_runs_and_unknown_names_fail_early(tiny_llama, tweets_text_file, tmp_path):
    from tailorlm.errors import ConfigError

    s = train(tiny_config(tmp_path / "p", tiny_llama, tweets_text_file, *RUN, train={"steps": 2},
                          eval={"metrics": ["val_loss", "tests.test_seams:head_logit_norm"]}), quiet=True)
    assert set(s["final"]) == set(s["base"]) == {"val_loss", "val_ppl", "val_tokens", "logit_abs_mean"}
    with pytest.raises(ConfigError, match="eval.metric val_loss is scored by the val_loss evaluator"):
        tiny_config(tmp_path / "q", tiny_llama, tweets_text_file, *RUN, eval={"metrics": ["accuracy"]})
    with pytest.raises(ConfigError, match="unknown evaluator 'val_los'.*Did you mean 'val_loss'"):
        train(tiny_config(tmp_path / "q", tiny_llama, tweets_text_file, *RUN, eval={"metrics": ["val_loss", "val_los"]}), quiet=True)
    assert not (tmp_path / "q").exists()     # refused before the run directory was made


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_start(self, run):
        self.events.append(("start", run.step))

    def on_step_start(self, run):
        self.events.append(("step_start", run.step))

    def on_before_optimizer_step(self, run):
        grads = [p.grad for p in run.params.values() if p.grad is not None]
        self.events.append(("grads", run.step, bool(grads)))

    def on_step_end(self, run, rec):
        self.events.append(("step_end", rec["step"], rec["loss"]))

    def on_eval(self, run, scores, verdict):
        self.events.append(("eval", run.step, scores["val_loss"]))

    def on_save(self, run, path):
        self.events.append(("save", run.step, Path(path).name))

    def on_end(self, run, summary):
        self.events.append(("end", summary["steps"]))


def test_a_callback_sees_every_step_and_every_evaluation(tiny_llama, tweets_text_file, tmp_path):
    rec = Recorder()
    train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN), quiet=True, callbacks=[rec])
    logged = read_metrics(tmp_path / "r" / "metrics.jsonl")
    losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    evals = [(r["step"], r["eval"]["val_loss"]) for r in logged if "eval" in r]
    ev = rec.events
    assert ev[0] == ("start", 0) and ev[-1] == ("end", 6)
    assert [(e[1], e[2]) for e in ev if e[0] == "step_end"] == losses and len(losses) == 6
    assert [e[1] for e in ev if e[0] == "step_start"] == [0, 1, 2, 3, 4, 5]
    assert [e for e in ev if e[0] == "grads"] == [("grads", s, True) for s in range(6)]
    assert [(e[1], e[2]) for e in ev if e[0] == "eval"] == evals and [s for s, _ in evals] == [2, 4, 6]
    assert [e[2] for e in ev if e[0] == "save"] == ["step-000003", "step-000006"]
    # order within a step: start, gradients, end; the evaluation after the step it follows
    i = ev.index(("step_start", 1))
    assert [e[0] for e in ev[i:i + 4]] == ["step_start", "grads", "step_end", "eval"]


def test_a_run_started_from_an_earlier_run_continues_from_it(tiny_llama, tweets_text_file, tmp_path):
    over = dict(train={"steps": 12, "lr": 3e-2, "eval_every": 6, "save_every": 6}, eval={"keep_best": False})
    first = train(tiny_config(tmp_path / "a", tiny_llama, tweets_text_file, *RUN, **over), quiet=True)
    second = train(tiny_config(tmp_path / "b", tiny_llama, tweets_text_file, *RUN, **over), quiet=True,
                   model=tmp_path / "a" / "final")
    # the second run's step 0 is the first run's end, not the base model
    assert second["base"]["val_loss"] == pytest.approx(first["final"]["val_loss"], rel=1e-5)
    assert second["base"]["val_loss"] < first["base"]["val_loss"] - 0.05
    assert second["final"]["val_loss"] < second["base"]["val_loss"]
    cfg_b = load_config(tmp_path / "b" / "config.yaml")
    assert Path(cfg_b.model.init_from) == (tmp_path / "a").resolve()     # recorded, so it resumes from the same start
    a, b = dict(load_run(tmp_path / "a")[1].named_parameters()), dict(load_run(tmp_path / "b")[1].named_parameters())
    lora = [k for k in a if "lora_" in k]
    assert lora and set(lora) == {k for k in b if "lora_" in k}           # the same adapter, trained further
    assert not all(torch.equal(a[k], b[k]) for k in lora)


def test_a_run_started_from_a_model_object_uses_that_model(tiny_llama, tweets_text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from tailorlm.eval.metrics import val_loss

    given = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        given.model.norm.weight.mul_(3.0)                           # a different model than the folder holds
    norm = given.model.norm.weight.detach().clone()
    cfg = tiny_config(tmp_path / "given", tiny_llama, tweets_text_file, *RUN, method={"name": "full"},
                      train={"steps": 2, "lr": 1e-4}, eval={"keep_best": False})
    data = build(cfg)[2]
    want = val_loss(given, data.val[:12], pad_id=data.formatter.tok.pad_token_id, device="cpu", precision="fp32", packing=True, row_tokens=48)
    s = train(cfg, quiet=True, model=given)
    assert s["base"]["val_loss"] == pytest.approx(want["loss"], rel=1e-6)     # step 0 is the given model
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "given" / "final")
    assert torch.allclose(final.model.norm.weight, norm, atol=1e-2)          # trained on from it, a little
    assert not torch.equal(final.model.norm.weight, norm)
