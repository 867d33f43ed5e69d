"""Issue 25 items 4 and 6: `tailorlm audit` and `tailorlm train` judge every file of a hostile corpus
alike, because both go through one validator (tailorlm/data/validate.py): the same exit code, the
same first file:line message, and, with data.on_error: skip, the same counts of skipped lines,
rejected rows and truncated examples in the audit's report, the console line and summary.json.

Training runs in-process (`tailorlm.commands.main`) on the tiny Llama for one step, with
data.audit: false, so that its verdict is the data pipeline's own, not the audit's."""
from __future__ import annotations

import json
import re

import pytest

from tailorlm.commands import main

from ..conftest import tiny_config
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)

SENTENCES = [
    "The river bends twice before it reaches the old stone mill",
    "Bake the bread at a high temperature for forty minutes",
    "Our team reviewed the quarterly numbers and found them optimistic",
    "A gentle breeze carried the smell of pine across the valley",
    "Replace the worn brake pads before the long mountain drive",
    "The museum opened a new wing for early printing presses",
    "Children gathered around the teacher to hear about the fox",
    "He tuned the violin while the orchestra waited in silence",
    "Solar panels on the roof now cover most of the electricity",
    "The committee postponed the vote until everyone read the report",
    "Fresh tomatoes and basil make a simple sauce taste rich",
    "Migrating geese flew south in a long line over the harbour",
]


def pairs():
    return [{"prompt": f"Summarise: {s}", "response": " ".join(s.split()[:3])} for s in SENTENCES]


def alpaca():
    return [{"instruction": f"Shorten: {s}", "input": "", "output": " ".join(s.split()[:2])} for s in SENTENCES]


def chats():
    return [{"messages": [{"role": "user", "content": f"Repeat: {s}"}, {"role": "assistant", "content": s}]}
            for s in SENTENCES]


def labelled():
    return [{"text": s, "label": "pos" if i % 2 else "neg"} for i, s in enumerate(SENTENCES)]


def texts():
    return [{"text": s} for s in SENTENCES]


def jsonl(rows, raw: dict[int, bytes] | None = None) -> bytes:
    """rows as JSON lines; raw maps a 1-based line number to bytes put there instead of a row."""
    lines = [json.dumps(r).encode() for r in rows]
    for n, b in sorted((raw or {}).items()):
        lines.insert(n - 1, b)
    return b"\n".join(lines) + b"\n"


def put(rows, at: dict[int, dict]):
    """rows with some of them (1-based) replaced."""
    rows = list(rows)
    for n, r in at.items():
        rows[n - 1] = r
    return rows


def csv_bytes(header: str, rows) -> bytes:
    return (header + "\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode()


def quoting_error_csv() -> bytes:
    lines = ["text,label"] + [f"{s},{'pos' if i % 2 else 'neg'}" for i, s in enumerate(SENTENCES)]
    lines[7] = '"a quote that never closes,pos'        # line 8: every line from here on is lost
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(tmp_path, rows) -> bytes:
    import datasets

    p = tmp_path / "tmp.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(p))
    return p.read_bytes()


HUGE = "word " * 12_000          # ~12k tokens: far over data.max_length=64

# name -> (file name, content (bytes, or a function of tmp_path), data settings)
CASES = {
    "instruction_wrong_types": ("wrong_types.jsonl", jsonl(put(alpaca(), {1: {"instruction": 5, "output": ["a"]}})),
                                {}),
    "chat_wrong_types": ("chat.jsonl", jsonl(put(chats(), {3: {"messages": [{"role": "user", "content": 5},
                                                                             {"role": "assistant", "content": "x"}]},
                                                         6: {"messages": "hello"}})), {}),
    "classification_wrong_types": ("cls.jsonl", jsonl(put(labelled(), {2: {"text": 42, "label": "pos"},
                                                                       5: {"text": "x", "label": ["pos"]}})), {}),
    "text_wrong_types": ("text.jsonl", jsonl(put(texts(), {4: {"text": 5}, 8: {"text": ["a", "b"]}})), {}),
    "missing_first_with_format": ("first.jsonl", jsonl(put(alpaca(), {1: {"instruction": "no output here"}})),
                                  {"format": "instruction"}),
    "missing_later": ("later.jsonl", jsonl(put(pairs(), {7: {"prompt": "a question without its answer"}})), {}),
    "mixed_formats": ("mixed.jsonl", jsonl(pairs() + texts()[:3]), {}),
    "empty": ("empty.jsonl", b"", {}),
    "blank_lines": ("blank.jsonl", b"\n\n".join(json.dumps(r).encode() for r in texts()) + b"\n   \n", {}),
    "invalid_json": ("badjson.jsonl", jsonl(pairs(), {3: b'{"prompt": "a",', 8: b"not json", 10: b"[1, 2]"}), {}),
    "csv_quoting_error": ("quoting.csv", quoting_error_csv(), {}),
    "csv_wrong_columns": ("cols.csv", csv_bytes("a,b", [(s, "x") for s in SENTENCES]), {}),
    "csv_wrong_columns_with_format": ("colsf.csv", csv_bytes("a,b", [(s, "x") for s in SENTENCES]),
                                      {"format": "classification"}),
    "parquet_wrong_columns": ("cols.parquet", lambda tmp: parquet_bytes(tmp, [{"foo": s, "bar": 1} for s in SENTENCES]),
                              {}),
    "huge_row": ("huge.jsonl", jsonl(put(pairs(), {3: {"prompt": HUGE, "response": "short"}})), {}),
    "non_utf8": ("latin1.jsonl", jsonl(texts(), {5: b'{"text": "caf\xe9 au lait"}'}), {}),
    "bom": ("bom.jsonl", b"\xef\xbb\xbf" + jsonl(pairs()), {}),
    "bom_csv": ("bom.csv", b"\xef\xbb\xbf" + csv_bytes("text,label", [(r["text"], r["label"]) for r in labelled()]),
                {}),
}


# one LoRA step of 2 on whatever data a test names (data.train and all), no plan check
ONE_STEP = ("data.format=auto", "data.max_length=64", "data.val_max=4", "train.steps=1", "train.batch_size=2",
            "train.lr=2e-4", "train.log_every=10", "train.plan_check=false", "train.eval_every=1", "train.save_every=1",
            "eval.max_examples=4", "eval.before=false", "output.overwrite=true")


def run_both(cfg, tmp_path, capsys):
    """(audit exit code, audit report, audit output, training exit code, training output)."""
    out = tmp_path / "audit.json"
    audit_code = main(["audit", "--config", str(cfg), "--json", str(out)])
    audit_out = capsys.readouterr().out
    train_code = main(["train", str(cfg)])
    cap = capsys.readouterr()
    return audit_code, json.loads(out.read_text()), audit_out, train_code, cap.out + cap.err


def first_fatal(report: dict) -> str:
    """The audit's first fatal finding as training words an error: FILE:LINE: MESSAGE (no row count)."""
    f = next(x for x in report["findings"] if x["severity"] == "fatal")
    where = f["file"] if f["line"] is None else f"{f['file']}:{f['line']}"
    return f"{where}: {re.sub(r' [(][0-9]+ rows?[)]$', '', f['message'])}"


COUNTS = ("skipped_lines", "rejected_rows", "truncated", "truncated_tokens")


def audit_totals(report: dict) -> dict:
    rows = report["stats"]["rows"]
    return {k: sum(s[k] for s in rows.values()) for k in COUNTS}


def console_totals(text: str) -> dict:
    line = next(x for x in text.splitlines() if x.startswith("[tailorlm] data:"))
    got = {"skipped_lines": re.search(r"skipped (\d+) bad lines?", line),
           "rejected_rows": re.search(r"rejected (\d+) bad rows?", line),
           "truncated": re.search(r"truncated (\d+) ", line),
           "truncated_tokens": re.search(r"\((\d+) tokens cut\)", line)}
    assert all(got.values()), line
    return {k: int(m.group(1)) for k, m in got.items()}


def assert_counts_agree(report, run, console):
    data = json.loads((run / "summary.json").read_text())["data"]
    want = audit_totals(report)
    assert {k: data[k] for k in COUNTS} == want
    assert console_totals(console) == want
    for split, st in report["stats"]["rows"].items():
        got = data["splits"][split]
        if split == "train" and "val" not in report["stats"]["rows"]:   # validation carved out of train
            got = {k: got[k] + data["splits"]["val"][k] for k in COUNTS}
        assert {k: got[k] for k in COUNTS} == {k: st[k] for k in COUNTS}, split
    return data


@pytest.mark.parametrize("on_error", ["stop", "skip"])
@pytest.mark.parametrize("case", list(CASES))
def test_audit_and_training_agree_on_every_hostile_file(case, on_error, tmp_path, tiny_llama, capsys):
    name, content, data = CASES[case]
    path = tmp_path / name
    path.write_bytes(content(tmp_path) if callable(content) else content)
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, None, *ONE_STEP, file=tmp_path / "run.yaml",
                      data={"train": str(path), "on_error": on_error, **data})
    audit_code, report, audit_out, train_code, train_out = run_both(cfg, tmp_path, capsys)
    assert audit_code == train_code, f"audit {audit_code}, training {train_code}:\n{audit_out}\n{train_out}"
    if train_code:
        first = first_fatal(report)
        assert first in train_out and first in audit_out, f"{first!r} not in:\n{train_out}"
    else:
        assert_counts_agree(report, run, train_out)


def test_every_split_is_checked_and_counted(tmp_path, tiny_llama, capsys):
    """Validation and test files: their bad lines and bad rows stop training (and the audit) at
    the same line, or are skipped and counted per split in all three places."""
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl(pairs()))
    val = tmp_path / "val.jsonl"
    val.write_bytes(jsonl(put(pairs()[:6], {2: {"prompt": "no answer"}}), {4: b"{broken"}))
    test = tmp_path / "test.jsonl"
    test.write_bytes(jsonl(put(pairs()[:6], {5: {"prompt": "x", "response": 7}})))
    base = {"train": str(train), "val": str(val), "test": str(test)}
    cfg = tiny_config(tmp_path / "run", tiny_llama, None, *ONE_STEP, file=tmp_path / "run.yaml",
                      data=base | {"on_error": "stop"})
    audit_code, report, audit_out, train_code, train_out = run_both(cfg, tmp_path, capsys)
    assert audit_code == train_code == 2
    assert first_fatal(report) == f"{val}:4: bad JSON: Expecting property name enclosed in double quotes (column 2)"
    assert first_fatal(report) in train_out
    run = tmp_path / "skip"
    cfg = tiny_config(run, tiny_llama, None, *ONE_STEP, file=tmp_path / "skip.yaml", data=base | {"on_error": "skip"})
    audit_code, report, audit_out, train_code, train_out = run_both(cfg, tmp_path, capsys)
    assert audit_code == train_code == 0, train_out
    data = assert_counts_agree(report, run, train_out)
    assert {s: (data["splits"][s]["skipped_lines"], data["splits"][s]["rejected_rows"]) for s in base} == \
        {"train": (0, 0), "val": (1, 1), "test": (0, 1)}


def test_a_long_validation_row_is_counted_as_truncated(tmp_path, tiny_llama, capsys):
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl(pairs()))
    val = tmp_path / "val.jsonl"
    val.write_bytes(jsonl(pairs()[:3] + [{"prompt": HUGE, "response": "short"}]))
    # max_length 128: only the long validation row is over it
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, None, *ONE_STEP, file=tmp_path / "run.yaml",
                      data={"train": str(train), "val": str(val), "max_length": 128})
    assert main(["train", str(cfg)]) == 0
    cap = capsys.readouterr()
    console = console_totals(cap.out + cap.err)
    data = json.loads((run / "summary.json").read_text())["data"]
    assert data["splits"]["val"]["truncated"] == 1 and data["splits"]["val"]["truncated_tokens"] > 10_000
    assert console["truncated"] == data["truncated"] == 1
    assert console["truncated_tokens"] == data["truncated_tokens"] == data["splits"]["val"]["truncated_tokens"]
