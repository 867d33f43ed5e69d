#!/usr/bin/env python
"""The defaults on tasks they were never tuned on: the zero-config run against the best of a learning-rate grid.

    python benchmarks/defaults.py [--tasks ...] [--models smollm2 gemma] [--seeds 1] [--steps N]
                                  [--lrs 1e-4 3e-4 1e-3 3e-3] [--budget X] [--out runs/bench-defaults]
                                  [--variant NAME --set KEY=VALUE ...] [--table]

Tasks (defaults_tasks.py): real data read where packages install, split once into train / val /
test under OUT/data. For each task and model, every arm runs `python -m tailorlm train CFG` in a
fresh process on the same train file:
  zero      CFG is the model and the data file, nothing else (plus the run folder and train.threads)
  no budget the zero-config run with retention.budget=null, where the defaults carry a forgetting
            budget (retention.budget: auto): what the budget cost in score and saved in forgetting
  lr X      the same, with train.lr=X and the zero-config run's resolved method and step count (and
            retention.budget=null: the grid measures what each rate learns, unmitigated)
  budget    the zero-config run with retention.budget=X (--budget: a candidate budget for a variant
            whose zero-config run has none)
then `python -m tailorlm eval RUN data.val=F data.test=F` scores its final model on the val file
and on the test file. The learning rate is chosen on validation (the mean over seeds); only test
numbers are reported. "Gain kept" is the budgeted run's gain (summary.json, base -> final on the run's
own validation rows) over the unmitigated run's. Score: macro-F1 for classification, held-out perplexity (exp of the per-token
loss of the response or text) for instruction and text data; ratio = zero / best (perplexity: best /
zero), target >= 0.95. Forgetting: the retention probe's general-text NLL change in summary.json.
`--steps N` caps every arm (a smoke run). `--variant NAME --set KEY=VALUE ...` runs every arm with those
overrides too (a candidate default: its "zero" is the model, the data file and the overrides), into
OUT/TASK/MODEL/NAME. Each arm's finished summary.json and each evaluation are read back, so a killed
benchmark resumes; an arm killed mid-run starts again. Each task, model and variant writes its
result.json; the table (OUT/table.md, `--table` alone rebuilds it) gathers every result.json under OUT,
so several benchmark processes may share OUT.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from defaults_tasks import TASKS, write_task
from harness import child_env, md_table

MODELS = {"smollm2": "smollm2-135m-instruct", "gemma": "gemma3-270m"}
LRS = ["1e-4", "3e-4", "1e-3", "3e-3"]


def tailorlm(args: list[str], log: Path) -> subprocess.CompletedProcess:
    """`python -m tailorlm ARGS` in a fresh process; its stderr appended to LOG."""
    p = subprocess.run([sys.executable, "-m", "tailorlm", *args], env=child_env(OMP_NUM_THREADS="1"),
                       capture_output=True, text=True)
    with open(log, "a") as fh:
        fh.write(f"$ tailorlm {' '.join(args)}\n{p.stderr}\n")
    return p


def run_arm(folder: Path, name: str, cfg: dict, overrides: list[str], steps: int | None) -> dict:
    """Train one arm into FOLDER/NAME (its finished summary read back when its steps match)."""
    run, log = folder / name, folder / f"{name}.log"
    done = run / "summary.json"
    if done.is_file() and (steps is None or json.loads(done.read_text())["steps"] == steps):
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{name}.eval-*.json"):   # scores of an earlier model in this folder
        stale.unlink()
    cfg_file = folder / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.time()
    p = tailorlm(["train", str(cfg_file), *overrides, f"output.dir={run}", "output.overwrite=true", "--quiet"], log)
    if p.returncode or not done.is_file():
        tail = [ln for ln in p.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        print(f"[bench] {folder.name}/{name} failed ({time.time() - t0:.0f} s): {tail[0]} (see {log})", flush=True)
        return {"error": tail[0]}
    return json.loads(done.read_text())


def evaluate(folder: Path, name: str, split: str, file: str, rows: int, threads: int) -> dict:
    """The arm's final model on FILE (val_loss / val_ppl, accuracy, macro-F1, predicted counts); kept in
    FOLDER/NAME.eval-SPLIT.json."""
    out = folder / f"{name}.eval-{split}.json"
    if out.is_file():
        return json.loads(out.read_text())
    p = tailorlm(["eval", "--json", "--no-base", str(folder / name), f"data.val={file}", f"data.test={file}",
                  f"eval.max_examples={rows}", "eval.metrics=[val_loss,accuracy]", f"train.threads={threads}"],
                 folder / f"{name}.log")
    text = p.stdout[p.stdout.find("{"):] if "{" in p.stdout else ""
    if p.returncode or not text:
        return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
    out.write_text(text)
    return json.loads(text)


def score(kind: str, m: dict) -> float | None:
    if "error" in m:
        return None
    return m.get("macro_f1") if kind == "classification" else m.get("val_ppl")


def run_pair(a, task: str, info: dict, model: str) -> dict:
    """Every arm of one task and model, over seeds: {arm: [per seed {summary, val, test}]}."""
    folder, kind = pair_folder(a.out, task, model, a.variant), TASKS[task]
    rows = {s: min(info[s]["rows"], a.eval_rows or 10**9) for s in ("val", "test")}
    base_cfg = {"model": MODELS[model], "data": {"train": info["files"]["train"]}}
    common = [f"train.threads={a.threads}"] + ([f"train.steps={a.steps}"] if a.steps else []) + a.set
    arms: dict[str, list] = {}

    def one(arm: str, seed: int, cfg: dict, extra: list[str], steps: int | None) -> None:
        name = f"{arm.replace(' ', '-')}-s{seed}"
        s = run_arm(folder, name, cfg, common + ([f"train.seed={seed}"] if seed else []) + extra, steps)
        ev = {} if "error" in s else {sp: evaluate(folder, name, sp, info["files"][sp], rows[sp], a.threads)
                                      for sp in ("val", "test")}
        arms.setdefault(arm, []).append({"summary": s, **ev})
        print(f"[bench] {task} / {model} / {a.variant} / {arm} seed {seed}: " + ("error" if "error" in s else
              f"{s['steps']} steps, {s['wall_time_s']:.0f} s, val {fmt(score(kind, ev['val']), '.4f')}, "
              f"test {fmt(score(kind, ev['test']), '.4f')}"), flush=True)

    for seed in range(a.seeds):
        one("zero", seed, base_cfg, [], a.steps)
    zero = next((r["summary"] for r in arms["zero"] if "error" not in r["summary"]), None)
    if zero is None:
        return arms
    resolved = yaml.safe_load((folder / "zero-s0" / "config.yaml").read_text()) \
        if (folder / "zero-s0" / "config.yaml").is_file() else {}
    grid_cfg = {**base_cfg, **({"method": resolved["method"]} if "method" in resolved else {})}
    zero_lr = float(resolved.get("train", {}).get("lr") or "nan")
    budgeted = (resolved.get("retention") or {}).get("budget") is not None
    off = ["retention.budget=null"] if budgeted else []
    if budgeted:   # what the forgetting budget cost and saved: the same run without it
        for seed in range(a.seeds):
            one("no budget", seed, base_cfg, off, a.steps)
    plain = arms.get("no budget") or arms["zero"]   # the zero-config run's settings, unmitigated
    for lr in a.lrs:
        for seed in range(a.seeds):
            if float(lr) == zero_lr and seed < len(plain):   # the (unmitigated) zero-config run is this grid point
                arms.setdefault(f"lr {lr}", []).append(plain[seed])
                continue
            one(f"lr {lr}", seed, grid_cfg, [f"train.lr={lr}", f"train.steps={zero['steps']}", *off], zero["steps"])
    if a.budget is not None:
        for seed in range(a.seeds):
            one("budget", seed, base_cfg, [f"retention.budget={a.budget}"], a.steps)
    return arms


def mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(xs) if xs else None


def arm_stats(kind: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r["summary"]]
    collapsed = [r for r in ok if kind == "classification" and sum(1 for v in
                 (r.get("test", {}).get("predicted") or {}).values() if v) == 1]
    return {"val": mean([score(kind, r.get("val", {})) for r in ok]),
            "test": mean([score(kind, r.get("test", {})) for r in ok]),
            "forgetting": mean([r["summary"].get("final", {}).get("ref_nll_change") for r in ok]),
            "gain": mean([gain(kind, r["summary"]) for r in ok]),
            "steps": ok[0]["summary"]["steps"] if ok else None,
            "time": mean([r["summary"].get("wall_time_s") for r in ok]),
            "collapsed": len(collapsed), "seeds": len(ok), "error": None if ok else runs[0]["summary"].get("error")}


def gain(kind: str, summary: dict) -> float | None:
    """The run's own gain on its validation rows (summary.json: base -> final): macro-F1 up, or the
    answers' perplexity down."""
    key = "macro_f1" if kind == "classification" else "val_ppl"
    b, f = (summary.get("base") or {}).get(key), (summary.get("final") or {}).get(key)
    if b is None or f is None:
        return None
    return f - b if kind == "classification" else b - f


def pair_folder(out: Path, task: str, model: str, variant: str) -> Path:
    return out / task / model / ("" if variant == "default" else variant)


def summarize(task: str, model: str, arms: dict, budget: str | None, variant: str = "default",
              overrides: list[str] = ()) -> dict:
    kind = TASKS[task]
    higher = kind == "classification"
    st = {arm: arm_stats(kind, runs) for arm, runs in arms.items()}
    grid = {arm: s for arm, s in st.items() if arm.startswith("lr ") and s["val"] is not None}
    best = (max if higher else min)(grid, key=lambda k: grid[k]["val"]) if grid else None
    z, b = st.get("zero", {}), grid.get(best, {})
    ratio = None
    if z.get("test") and b.get("test"):
        ratio = z["test"] / b["test"] if higher else b["test"] / z["test"]
    # the run with the forgetting budget and the same run without it: the zero-config run and its
    # "no budget" arm where the defaults carry a budget, else the "budget" arm (--budget) and zero
    mit, unmit = (z, st.get("no budget")) if "no budget" in st else (st.get("budget"), z)
    kept = None
    if mit and unmit and mit.get("gain") is not None and unmit.get("gain"):
        kept = mit["gain"] / unmit["gain"]
    return {"task": task, "model": model, "variant": variant, "overrides": list(overrides), "kind": kind,
            "metric": "macro-F1" if higher else "perplexity",
            "zero": z, "best_lr": best[3:] if best else None, "best": b, "ratio": ratio,
            "budget": mit, "unmitigated": unmit, "gain_kept": kept, "budget_value": budget, "arms": st}


def fmt(x, spec: str = ".3f") -> str:
    return "" if x is None else format(x, spec)


def table(results: list[dict]) -> str:
    rows = []
    for r in results:
        z, b, bud, un = r["zero"], r["best"], r["budget"] or {}, r.get("unmitigated") or r["zero"]
        flags = [f"{arm}: one class in {s['collapsed']}/{s['seeds']} seeds" for arm, s in r["arms"].items()
                 if s["collapsed"]] + ([f"zero failed: {z.get('error')}"] if z.get("error") else [])
        bud_cell = fmt(bud.get("forgetting"), "+.4f") if bud.get("seeds") else ("failed" if bud else "")
        rows.append([r["task"], r["model"], r.get("variant", "default"), r["kind"], r["metric"], fmt(z.get("test")), fmt(b.get("test")),
                     r["best_lr"] or "", fmt(r["ratio"]), "yes" if (r["ratio"] or 0) >= 0.95 else "no",
                     z.get("steps") or "", fmt(z.get("time"), ".0f"), fmt(un.get("forgetting"), "+.4f"), bud_cell,
                     fmt(r.get("gain_kept"), ".0%"), "; ".join(flags)])
    return md_table(["task", "model", "variant", "kind", "metric (test)", "zero-config", "grid-best", "best lr (val)",
                     "ratio", ">= 0.95", "steps", "zero time s", "forgetting, no budget", "forgetting, budget",
                     "gain kept (val)", "flags"], "lllllrrrrlrrrrrl", rows)


def gather(out: Path) -> list[dict]:
    """Every result.json under OUT, in task, model, variant order (the task table's order)."""
    found = [json.loads(f.read_text()) for f in out.glob("*/*/**/result.json")]
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(found, key=lambda r: (order.get(r["task"], 99), r["model"], r.get("variant") != "default",
                                        r.get("variant", "")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--lrs", nargs="*", default=LRS)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="cap every arm at this many steps (a smoke run)")
    ap.add_argument("--budget", default=None, help="also run zero-config with retention.budget=X")
    ap.add_argument("--eval-rows", type=int, default=None, help="score at most this many val / test rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-defaults"))
    ap.add_argument("--variant", default="default", help="a name for the --set overrides (OUT/TASK/MODEL/NAME)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every arm")
    ap.add_argument("--table", action="store_true", help="only rebuild OUT/table.md from the results there")
    ap.add_argument("--archive", type=Path, default=None, help="copy what resumes the benchmark (every arm's "
                    "summary.json and config.yaml, its scores, result.json, table.md; no weights, no text) to DIR")
    a = ap.parse_args()
    a.out = a.out.resolve()
    if a.set and a.variant == "default":
        ap.error("--set needs --variant NAME (the default variant is the library's defaults)")
    if a.table:
        return write_table(a.out)
    if a.archive:
        return archive(a.out, a.archive.resolve())
    infos = {t: write_task(t, a.out / "data") for t in a.tasks}
    for t, info in infos.items():
        print(f"[bench] {t} ({TASKS[t]}): " + ", ".join(f"{s} {info[s]['rows']}" for s in ("train", "val", "test"))
              + (f"; {len(info['train']['labels'])} labels" if info["train"]["labels"] else ""), flush=True)
    (a.out / "tasks.json").write_text(json.dumps(infos, indent=1))
    for t in a.tasks:
        for m in a.models:
            r = summarize(t, m, run_pair(a, t, infos[t], m), a.budget, a.variant, a.set)
            (pair_folder(a.out, t, m, a.variant) / "result.json").write_text(json.dumps(r, indent=1))
    write_table(a.out)


KEEP = ("*/summary.json", "*/config.yaml", "*.eval-*.json", "result.json")


def archive(out: Path, dest: Path) -> None:
    """What a later benchmark resumes from (a session's run folders do not outlive it): `cp -r DEST/. OUT/`
    puts it back, and `defaults.py` then reads every finished arm instead of training it again. The data
    splits are not kept (the packages' text is not ours to copy): they are rebuilt, seeded, from the packages."""
    import shutil
    n = 0
    for task in [d for d in out.iterdir() if d.is_dir() and d.name != "data"]:
        for f in [f for pat in KEEP for f in task.rglob(pat)] + [out / "table.md", out / "tasks.json"]:
            if f.is_file() and "checkpoints" not in f.parts and "final" not in f.parts:
                (dest / f.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / f.relative_to(out))
                n += 1
    print(f"[bench] {n} files to {dest}; resume with: cp -r {dest}/. {out}/")


def write_table(out: Path) -> None:
    md = table(gather(out))
    (out / "table.md").write_text(md + "\n")
    print("\n" + md)
    print(f"\n[bench] {out / 'table.md'} (from every result.json under {out})")


if __name__ == "__main__":
    main()
