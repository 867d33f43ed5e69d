"""Tests for `tailorlm audit` on small crafted files: every check must catch what it claims to and
leave clean data alone. Files are written under tmp_path; no real data set text is stored here."""
from __future__ import annotations

import argparse
import csv
import hashlib
import json

import numpy as np
import pytest

from tailorlm.audit import AuditReport, Finding, run_audit
from tailorlm.audit import dupes, pii
from tailorlm.commands import audit as command
from tailorlm.audit.schema import make_layout

# Twenty distinct, PII-free sentences: enough rows for the robust length statistics, and
# different enough that no two are near duplicates.
SENTENCES = [
    "The river bends twice before it reaches the old stone mill near the village",
    "Bake the bread at a high temperature for forty minutes and let it cool",
    "Our team reviewed the quarterly numbers and found the forecast too optimistic",
    "A gentle breeze carried the smell of pine needles across the quiet valley",
    "Replace the worn brake pads before the long drive through the mountains",
    "The museum opened a new wing dedicated to early printing presses",
    "Children gathered around the teacher to hear the story about the fox",
    "He tuned the violin carefully while the orchestra waited in silence",
    "Solar panels on the roof now cover most of the household electricity",
    "The committee postponed the vote until every member had read the report",
    "Fresh tomatoes and basil make a simple sauce taste surprisingly rich",
    "Migrating geese flew south in a long uneven line over the harbour",
    "She repaired the bicycle chain with a borrowed tool and some patience",
    "Heavy snow closed the pass so the travellers waited at the lodge",
    "The library extended its opening hours during the examination period",
    "Engineers tested the bridge by driving loaded trucks across it slowly",
    "A small cafe on the corner serves the best lemon cake in town",
    "The orchard produced fewer apples this year because of the late frost",
    "Volunteers planted two hundred oak saplings along the eroded riverbank",
    "The chess club meets on Thursdays in the back room of the community hall",
]


def write_jsonl(path, rows, raw_lines=None):
    """rows are dicts; raw_lines maps a 1-based line number to raw bytes put there instead."""
    raw_lines = raw_lines or {}
    out, n, it = [], 1, iter(rows)
    total = len(rows) + len(raw_lines)
    while n <= total:
        out.append(raw_lines[n] if n in raw_lines else json.dumps(next(it)).encode())
        n += 1
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def instruction_rows(n=20):
    return [{"prompt": f"Summarise: {s}", "response": s.split()[1] + " " + s.split()[-1]}
            for s in SENTENCES[:n]]


def by_check(report, check, severity=None):
    return [f for f in report.findings if f.check == check and (severity is None or f.severity == severity)]


# ---------------------------------------------------------------- parsing

def test_bad_json_line_reported_with_file_and_line(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{"text": s} for s in SENTENCES[:5]],
                    {3: b'{"text": "broken line", }'})
    r = run_audit(f)
    parse = by_check(r, "parse")
    assert [(x.file, x.line) for x in parse] == [(str(f), 3)]
    assert "bad JSON" in parse[0].message and parse[0].severity == "warning"
    assert r.stats["rows"]["train"]["rows"] == 5


def test_bad_csv_quoting_reported_with_line(tmp_path):
    f = tmp_path / "train.csv"
    f.write_text("text,label\n" + "".join(f"{s},a\n" for s in SENTENCES[:3]) + '"quoted" junk,b\n'
                 + "after,a\n")
    r = run_audit(f, fmt="classification")
    parse = by_check(r, "parse")
    assert len(parse) == 1 and parse[0].file == str(f) and parse[0].line == 5
    assert "bad CSV" in parse[0].message and "lost" in parse[0].message


def test_invalid_utf8_line_reported_and_salvaged(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{"text": s} for s in SENTENCES[:5]],
                    {4: b'{"text": "caf\xe9 au lait with extra foam"}'})
    r = run_audit(f)
    parse = by_check(r, "parse")
    assert [(x.line, "not valid UTF-8" in x.message) for x in parse] == [(4, True)]
    # the salvaged row still reaches the content checks, flagged as mangled, at its own line
    mangled = [x for x in by_check(r, "quality") if "mangled" in x.message]
    assert mangled and mangled[0].line == 4 and "\ufffd" in mangled[0].examples[0]["text"]
    assert r.stats["rows"]["train"] == {"file": str(f), "rows": 5, "skipped_lines": 1,
                                        "salvaged": 1, "usable": 6, "rejected_rows": 0}


def test_on_error_stop_is_fatal(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{"text": s} for s in SENTENCES[:4]], {2: b"{nope"})
    r = run_audit(f, on_error="stop")
    fatal = by_check(r, "parse", "fatal")
    assert [x.line for x in fatal] == [2] and r.exit_code() == 2
    assert run_audit(f).exit_code() == 0


def test_missing_file_is_fatal(tmp_path):
    r = run_audit(tmp_path / "nope.jsonl")
    assert r.exit_code() == 2 and "no such file" in r.findings[0].message


# ---------------------------------------------------------------- schema

@pytest.mark.parametrize("rows,fmt,alpaca", [
    ([{"text": "a"}], "text", False),
    ([{"prompt": "a", "response": "b"}], "instruction", False),
    ([{"instruction": "a", "input": "", "output": "b"}], "instruction", True),
    ([{"messages": [{"role": "user", "content": "a"}]}], "chat", False),
    ([{"text": "a", "label": "x"}], "classification", False),
])
def test_detect_format(rows, fmt, alpaca):
    layout = make_layout(rows)
    assert (layout.fmt, layout.alpaca) == (fmt, alpaca)


def test_fields_name_other_columns():
    layout = make_layout([{"tweet": "hi", "sentiment": "pos", "conf": "1"}],
                         fields={"text": "tweet", "label": "sentiment"})
    assert layout.fmt == "classification" and layout.target({"sentiment": "pos"}) == "pos"
    assert make_layout([{"foo": 1}]) is None


def test_chat_bad_role_and_no_assistant(tmp_path):
    ok = {"messages": [{"role": "user", "content": "Name a colour"},
                       {"role": "assistant", "content": "Teal"}]}
    bad_role = {"messages": [{"role": "human", "content": "Name a fruit"},
                             {"role": "assistant", "content": "Pear"}]}
    no_asst = {"messages": [{"role": "system", "content": "Be brief"},
                            {"role": "user", "content": "Name a tree"}]}
    f = write_jsonl(tmp_path / "chat.jsonl", [ok, bad_role, no_asst])
    r = run_audit(f)
    assert r.stats["format"] == "chat"
    msgs = {x.message.split(" (")[0]: x for x in by_check(r, "schema")}
    assert msgs["bad chat role"].line == 2
    assert "'human'" in msgs["bad chat role"].examples[0]["text"]
    assert msgs["no assistant turn: nothing to train on"].line == 3
    assert r.stats["rows"]["train"]["usable"] == 1


def test_missing_empty_wrong_type_and_unknown_label(tmp_path):
    rows = [{"text": "good one", "label": "pos"}, {"text": "no label"},
            {"text": "", "label": "neg"}, {"text": 42, "label": "neg"},
            {"text": "odd label", "label": "maybe"}]
    f = write_jsonl(tmp_path / "cls.jsonl", rows)
    r = run_audit(f, fmt="classification", labels=["pos", "neg"])
    got = {(x.message.split(" (")[0], x.line) for x in by_check(r, "schema")}
    # worded as training words them (one validator: tailorlm/data/validate.py)
    assert ("field 'label' is missing or empty", 2) in got
    assert ("field 'text' is missing or empty", 3) in got
    assert ("field 'text' is a int, expected a string", 4) in got
    assert ("unknown label", 5) in got
    assert r.stats["rows"]["train"]["usable"] == 1


# ---------------------------------------------------------------- quality

def test_quality_mojibake_fffd_control_whitespace(tmp_path):
    rows = instruction_rows()
    rows[2]["response"] = "The caf\u00c3\u00a9 is open"            # "café" as mojibake
    rows[5]["response"] = "don\u00e2\u20ac\u2122t stop"           # "don’t"
    rows[7]["response"] = "broken \ufffd text"
    rows[9]["response"] = "bell\x07 here"
    rows[11]["response"] = "   "
    rows[13]["prompt"] = "Le caf\u00e9 \u00e0 Paris co\u00fbte cher"  # real accents: not mojibake
    f = write_jsonl(tmp_path / "q.jsonl", rows)
    r = run_audit(f)
    q = {x.message.split(" (")[0]: x for x in by_check(r, "quality")}
    moj = q["mangled characters: mojibake"]
    assert [e["line"] for e in moj.examples] == [3, 6] and moj.examples[0]["should_be"] == "é"
    assert q["mangled characters: U+FFFD replacement characters"].line == 8
    assert q["control characters"].line == 10 and q["control characters"].examples[0]["char"] == "U+0007"
    # a whitespace-only response is a row training rejects (and stops at, under on_error: stop):
    # the shared validator's schema finding, no longer a row the quality check sees
    assert [(x.message, x.line) for x in by_check(r, "schema")] == [("field 'response' is missing or empty (1 row)", 12)]
    assert r.stats["quality"]["mangled_rows"] == 3


def test_length_outliers(tmp_path):
    rows = [{"text": s} for s in SENTENCES]
    rows.append({"text": " ".join(SENTENCES) * 3})
    rows.append({"text": "ok"})
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    r = run_audit(f)
    q = by_check(r, "quality", "info")
    assert {x.message.split(" (")[0] for x in q} == {"very short", "very long"}
    assert {x.line for x in q} == {21, 22}


# ---------------------------------------------------------------- duplicates

def test_exact_duplicate_within_train(tmp_path):
    rows = [{"text": s} for s in SENTENCES]
    rows.append({"text": "  " + SENTENCES[4].upper() + "!!"})  # same after normalisation
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    r = run_audit(f)
    d = [x for x in by_check(r, "duplicates") if "exact" in x.message]
    assert len(d) == 1 and d[0].examples[0]["lines"] == [5, 21]
    assert r.stats["exact_duplicates"]["train"] == {"groups": 1, "rows": 2, "redundant": 1}
    assert r.stats["near_duplicates"]["within"] == {}


def test_near_duplicate_leakage_val_from_train(tmp_path):
    long = ("the quarterly report shows that revenue from the northern region grew steadily while "
            "costs in the southern warehouses fell after the new inventory system")
    train = [{"text": s} for s in SENTENCES] + [{"text": long}]
    val_row = long.replace("steadily", "slowly")                   # one word changed
    val = [{"text": "An unrelated sentence about sailing boats and summer weather"},
           {"text": val_row}, {"text": SENTENCES[0]}]                # plus one exact copy
    ft = write_jsonl(tmp_path / "train.jsonl", train)
    fv = write_jsonl(tmp_path / "val.jsonl", val)
    r = run_audit(ft, val=fv)
    leaks = [x for x in by_check(r, "duplicates") if x.message.startswith("leakage")]
    near = [x for x in leaks if "near" in x.message]
    exact = [x for x in leaks if "exactly" in x.message]
    assert len(near) == 1 and near[0].file == str(fv) and near[0].line == 2
    ex = near[0].examples[0]
    assert ex["similar_to"] == f"{ft}:21" and 0.8 <= ex["similarity"] < 1
    assert len(exact) == 1 and exact[0].line == 3 and exact[0].examples[0]["same_as"] == f"{ft}:1"
    assert r.stats["near_duplicates"]["leakage"] == {"val": {"pairs": 1, "rows": 1}}
    # a stricter threshold than the pair's similarity drops it
    strict = run_audit(ft, val=fv, near_dup_threshold=0.95)
    assert strict.stats["near_duplicates"]["leakage"] == {}


def test_conflicting_labels_on_duplicates(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("text,label\n" + "".join(f"{s},pos\n" for s in SENTENCES[:6])
                 + f"{SENTENCES[2]},neg\n")
    r = run_audit(f, fmt="classification")
    c = [x for x in by_check(r, "duplicates") if "different labels" in x.message]
    assert c and c[0].examples[0]["labels"] == {"pos": 1, "neg": 1}


def test_minhash_estimates_jaccard():
    a = dupes.shingles(" ".join(SENTENCES[:5]))
    b = dupes.shingles(" ".join(SENTENCES[1:6]))
    true = dupes.jaccard(set(a.tolist()), set(b.tolist()))
    sig = dupes.minhash([a, b], num_perm=512)
    est = float(np.mean(sig[0] == sig[1]))
    assert abs(est - true) < 0.08
    bands, r = dupes.lsh_params(0.8)
    assert bands * r <= dupes.NUM_PERM and 1 - (1 - 0.8 ** r) ** bands >= 0.95


# ---------------------------------------------------------------- PII

def test_luhn_and_iban_checksums():
    assert pii.luhn_ok("4111111111111111") and not pii.luhn_ok("4111111111111112")
    assert pii.iban_ok("GB82 WEST 1234 5698 7654 32") and not pii.iban_ok("GB82 WEST 1234 5698 7654 33")


def test_pii_only_valid_numbers_flagged_and_masked(tmp_path):
    rows = [{"text": s} for s in SENTENCES[:6]]
    rows[0]["text"] = "Pay with 4111 1111 1111 1111 today"
    rows[1]["text"] = "Typo card 4111 1111 1111 1112 is invalid"
    rows[2]["text"] = "Transfer to GB82 WEST 1234 5698 7654 32 please"
    rows[3]["text"] = "Wrong IBAN GB82 WEST 1234 5698 7654 33 here"
    rows[4]["text"] = "Mail jane.doe@example.com or call +1 (555) 123-4567, ssn 123-45-6789"
    rows[5]["text"] = "Server 192.168.10.20 answered @jane_doe"
    rows.append({"text": rows[4]["text"] + " caf\u00c3\u00a9"})   # duplicate + mojibake quote it too
    rows.append(dict(rows[-1]))
    f = write_jsonl(tmp_path / "p.jsonl", rows)
    r = run_audit(f)
    found = {x.message.split(":")[0]: x for x in by_check(r, "pii")}
    assert set(found) == {"card", "iban", "email", "phone", "ssn", "ip", "handle"}
    assert [e["line"] for e in found["card"].examples] == [1]
    assert [e["line"] for e in found["iban"].examples] == [3]
    assert found["card"].examples[0]["value"] == "**** **** **** 1111"
    assert found["email"].examples[0]["value"] == "j***@e***.com"
    assert found["handle"].severity == "info" and found["card"].severity == "warning"
    assert {x.check for x in r.findings} >= {"duplicates", "quality", "pii"}
    text = r.to_json() + r.summary()
    for secret in ("jane.doe@example.com", "4111 1111 1111 1111", "123-45-6789", "WEST 1234"):
        assert secret not in text  # the report never repeats the raw value


def test_masking_is_idempotent():
    text = ("jane.doe@example.com +1 (555) 123-4567 123-45-6789 192.168.10.20 @jane_doe "
            "4111 1111 1111 1111 GB82 WEST 1234 5698 7654 32")
    once = pii.mask_text(text)
    assert once == ("j***@e***.com +* (***) ***-**67 ***-**-6789 192.*.*.* @j*** "
                    "**** **** **** 1111 GB** **** **** **** **** 32")
    assert pii.mask_text(once) == once


def test_redact_jsonl_and_csv_leave_input_untouched(tmp_path):
    rows = [{"text": "Call +1 (555) 123-4567 or mail bob@example.org", "label": "a"},
            {"text": SENTENCES[0], "label": "b"},
            {"text": "Card 4111 1111 1111 1111, not 4111 1111 1111 1112", "label": "a"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows, {3: b'{"text": "bad json bob@example.org"'})
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out.jsonl"
    counts = pii.redact_file(src, out)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    lines = out.read_bytes().splitlines()
    assert json.loads(lines[0])["text"] == "Call [PHONE] or mail [EMAIL]"
    assert lines[1] == src.read_bytes().splitlines()[1]          # untouched line byte-identical
    assert lines[2] == b'{"text": "bad json [EMAIL]"'              # broken line redacted as text
    assert json.loads(lines[3])["text"] == "Card [CARD], not 4111 1111 1111 1112"
    assert counts == {"phone": 1, "email": 2, "card": 1}

    csv_src = tmp_path / "in.csv"
    csv_src.write_bytes(b'text,label\r\n"Hi, I am @bob_k at 10.0.0.12",a\r\nplain \xff row,b\r\n')
    before = csv_src.read_bytes()
    pii.redact_file(csv_src, tmp_path / "out.csv")
    assert csv_src.read_bytes() == before
    red = (tmp_path / "out.csv").read_bytes()
    assert red == b'text,label\r\n"Hi, I am [HANDLE] at [IP]",a\r\nplain \xff row,b\r\n'
    with pytest.raises(ValueError):
        pii.redact_file(csv_src, csv_src)


# ---------------------------------------------------------------- labels

def test_label_balance_and_majority_baseline(tmp_path):
    labels = ["pos"] * 5 + ["neg"] * 3 + ["neu"] * 2
    f = tmp_path / "l.csv"
    f.write_text("sentence,sentiment\n" + "".join(f"{s},{l}\n" for s, l in zip(SENTENCES, labels)))
    fv = tmp_path / "v.csv"
    fv.write_text("sentence,sentiment\n" + "".join(f"{s},{l}\n" for s, l in
                                                    zip(SENTENCES[10:14], ["neg", "neg", "pos", "odd"])))
    r = run_audit(f, val=fv, fields={"text": "sentence", "label": "sentiment"})
    assert r.stats["format"] == "classification"
    tr = r.stats["labels"]["train"]
    assert tr["counts"] == {"pos": 5, "neg": 3, "neu": 2}
    assert tr["majority"] == "pos" and tr["majority_baseline"] == 0.5 and tr["imbalance_ratio"] == 2.5
    assert r.stats["labels"]["val"]["train_majority_baseline"] == 0.25
    msgs = [x.message for x in by_check(r, "labels")]
    assert any("5/10 = 0.500" in m for m in msgs)
    assert any("labels absent from train: ['odd']" in m for m in msgs)


# ---------------------------------------------------------------- report, exit codes, command

def run_cmd(argv):
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return command.audit_command(p.parse_args([str(a) for a in argv]))


def test_exit_codes(tmp_path, capsys):
    clean = write_jsonl(tmp_path / "clean.jsonl", instruction_rows())
    assert run_cmd([clean]) == 0 and run_cmd([clean, "--strict"]) == 0
    dup = write_jsonl(tmp_path / "dup.jsonl", instruction_rows() + instruction_rows(1))
    assert run_cmd([dup]) == 0
    assert run_cmd([dup, "--strict"]) == 1
    assert run_cmd([tmp_path / "missing.jsonl"]) == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert run_cmd([empty]) == 2
    out = capsys.readouterr().out
    assert "no usable rows" in out and "-> clean" in out


def test_summary_orders_fatal_first():
    rep = AuditReport([Finding("info", "x", "an info"), Finding("warning", "y", "a warning"),
                       Finding("fatal", "z", "a fatal")])
    text = rep.summary()
    assert text.index("a fatal") < text.index("a warning") < text.index("an info")
    assert rep.exit_code() == 2


def test_json_report_round_trips(tmp_path):
    rows = instruction_rows() + instruction_rows(2)
    rows[3]["response"] = "write to ann@example.net"
    f = write_jsonl(tmp_path / "t.jsonl", rows, {5: b"{bad"})
    out = tmp_path / "report.json"
    assert run_cmd([f, "--json", out]) == 2          # the bad line: training (on_error: stop) would stop there
    assert run_cmd([f, "--json", out, "--on-error", "skip"]) == 0
    loaded = AuditReport.from_json(out.read_text())
    direct = run_audit(f)
    assert [(x.severity, x.check, x.message, x.line) for x in loaded.findings] == \
           [(x.severity, x.check, x.message, x.line) for x in direct.sorted_findings()]
    assert loaded.stats["exact_duplicates"] == direct.stats["exact_duplicates"]
    assert AuditReport.from_json(loaded.to_json()) == loaded
    assert json.loads(out.read_text())["counts"]["warning"] >= 3


def test_config_yaml_supplies_paths_fields_and_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # data paths are relative to the working directory
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "tr.csv").write_text(
        "sentence,sentiment\n" + "".join(f"{s},{l}\n" for s, l in zip(SENTENCES, ["a", "b"] * 9 + ["c", "a"])))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {path: nowhere}\ndata:\n  train: d/tr.csv\n  format: classification\n"
                   "  text_field: sentence\n  label_field: sentiment\n  labels: [a, b]\n"
                   "  too_long: drop\n  on_error: skip\n")
    conf = command.read_config(cfg)
    assert conf["train"] == "d/tr.csv" and conf["labels"] == ["a", "b"]
    assert conf["fields"] == {"text": "sentence", "label": "sentiment"}
    assert conf["options"] == {"too_long": "drop"} and conf["on_error"] == "skip"
    out = tmp_path / "r.json"
    # model 'nowhere' cannot load: fatal, but the data checks still ran
    assert run_cmd(["--config", cfg, "--json", out]) == 2
    rep = json.loads(out.read_text())
    assert rep["stats"]["labels"]["train"]["counts"] == {"a": 10, "b": 9}
    assert any("unknown label" in x["message"] and x["line"] == 20 for x in rep["findings"])
    assert any("cannot load tokenizer" in x["message"] for x in rep["findings"])


def test_config_on_error_stop_makes_every_bad_line_fatal(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "t.jsonl", [{"text": s} for s in SENTENCES[:4]], {2: b"{x", 4: b"[1]"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  train: t.jsonl\n  on_error: stop\n")
    out = tmp_path / "r.json"
    assert run_cmd(["--config", cfg, "--json", out]) == 2
    fatal = [(x["line"], x["check"]) for x in json.loads(out.read_text())["findings"] if x["severity"] == "fatal"]
    assert fatal == [(2, "parse"), (4, "parse")]
    assert run_cmd(["--config", cfg, "--on-error", "skip"]) == 0


def test_redact_option_writes_copy(tmp_path):
    rows = [{"text": s} for s in SENTENCES[:3]] + [{"text": "ping 8.8.8.8 now"}]
    f = write_jsonl(tmp_path / "t.jsonl", rows)
    before = f.read_bytes()
    out = tmp_path / "red.jsonl"
    run_cmd([f, "--redact", out])
    assert f.read_bytes() == before
    assert json.loads(out.read_text().splitlines()[3]) == {"text": "ping [IP] now"}
    assert len(list(csv.reader(out.read_text().splitlines()))) == 4
