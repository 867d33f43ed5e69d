"""Sharp edges of the data layer (issue 14 items 3, 12, 13; issue 13 item 8): truncation keeps the
target, messages name the real problem, several training files with weights, and nothing is lost
silently (CSV lines after a quoting error, non-string fields, deep JSON)."""
import json

import pytest
from transformers import AutoTokenizer

from tailorlm.config import DataConfig
from tailorlm.data import DataError, Formatter, build_data, read_rows, tokenize_classes, tokenize_rows
from tailorlm.data.tokenize import IGNORE
from tailorlm.models.load import set_pad_token

from ..conftest import real_tweets, write_jsonl


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    t = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    set_pad_token(t)
    return t


def trained(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE])


def untrained(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE])


def row(line=3, **kw):
    return {"_file": "d.jsonl", "_line": line, **kw}


ARTICLE = " ".join(r["text"] for r in real_tweets(40))   # a long real text: ~40 tweets


# ------------------------------------------------------------------ item 3: truncation keeps the target

def test_truncation_cuts_the_prompt_and_keeps_the_label_and_response(tok):
    d = DataConfig(train="x", max_length=64, prompt_template="Tweet: {text}\nSentiment ({labels})?")
    fm = Formatter("classification", tok, d, ["negative", "positive"])
    (ex,), rep = tokenize_rows([row(text=ARTICLE, label="positive")], "classification", tok, d,
                               ["negative", "positive"], fm)
    assert len(ex.input_ids) <= 64 and trained(tok, ex) == "positive<|im_end|>\n"
    prompt = untrained(tok, ex)
    assert prompt.startswith("<|im_start|>user\nTweet: " + ARTICLE[:20])          # the text's start kept
    assert "\nSentiment (negative, positive)?<|im_end|>\n<|im_start|>assistant\n" in prompt   # the template's tail
    assert ARTICLE[-30:] not in prompt
    assert rep.truncated == 1 and rep.dropped_no_target == 0 and rep.target_tokens_lost == 0
    assert rep.truncated_tokens > 300          # most of the article's tokens were cut, and counted

    d = DataConfig(train="x", max_length=48)
    (ex,), rep = tokenize_rows([row(prompt=ARTICLE, response="We are sorry, DM us.")], "instruction", tok, d)
    assert len(ex.input_ids) <= 48 and trained(tok, ex) == "We are sorry, DM us.<|im_end|>\n"
    assert rep.truncated == 1 and rep.truncated_tokens > 300
    assert rep.to_dict()["truncated_tokens"] == rep.truncated_tokens


def test_truncation_for_a_classification_head_keeps_the_template_tail(tok):
    d = DataConfig(train="x", max_length=40, prompt_template="{text} => sentiment?")
    fm = Formatter("classification", tok, d, ["neg", "pos"])
    (ex,), rep = tokenize_classes([row(text=ARTICLE, label="pos")], tok, d, ["neg", "pos"], fm)
    assert len(ex.input_ids) <= 40 and ex.labels == [1]
    assert tok.decode(ex.input_ids).endswith(" => sentiment?")
    assert rep.truncated == 1 and rep.truncated_tokens > 300


def test_build_data_reports_what_was_cut(tok, tmp_path):
    rows = [{"text": ARTICLE if i % 5 == 0 else f"short tweet {i}", "label": "pos" if i % 2 else "neg"}
            for i in range(30)]
    data = build_data(DataConfig(train=str(write_jsonl(tmp_path / "c.jsonl", rows)), max_length=64), tok)
    rep = data.report["train"]
    assert rep["truncated"] >= 4 and rep["dropped_no_target"] == 0 and rep["truncated_tokens"] > 1000
    assert len(data.train) + len(data.val) == 30     # no long example lost its label and was dropped


# ------------------------------------------------------------------ item 12: messages name the problem

def test_a_single_row_file_says_nothing_is_left_to_train_on(tok, tmp_path):
    p = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "a", "response": "b"}])
    with pytest.raises(DataError, match="one usable row, so nothing is left to train on") as e:
        build_data(DataConfig(train=str(p)), tok)
    assert "cannot tell the data format" not in str(e.value)


def test_a_directory_is_called_a_directory(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a"}])
    with pytest.raises(DataError, match=r"is a directory, not a data file.*it holds train.jsonl"):
        read_rows(tmp_path)


def test_a_missing_field_in_the_first_row_names_the_field_and_line(tok, tmp_path):
    rows = [{"prompt": "q0"}] + [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(1, 10)]
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'response' is missing or empty "
                                        r"\(the row has \['prompt'\]\)"):
        build_data(DataConfig(train=str(write_jsonl(tmp_path / "bad.jsonl", rows))), tok)


# ------------------------------------------------------------------ item 13: several training files

def test_several_training_files_with_weights_repeat_rows_after_the_split(tok, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "response": "x"} for i in range(10)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "response": "y"} for i in range(10)])
    val = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "v", "response": "z"}])
    d = DataConfig(train=[{"path": str(a), "weight": 3}, str(b)], val=str(val))
    data = build_data(d, tok)
    assert len(data.train) == 40          # a's 10 rows three times, b's once
    files = [r["_file"] for r in data.train_rows]
    assert files.count(str(a)) == 30 and files.count(str(b)) == 10
    data = build_data(DataConfig(train=[{"path": str(a), "weight": 3}, str(b)]), tok)   # split carved first
    held = {r["prompt"] for r in data.val_rows}
    assert held and not held & {r["prompt"] for r in data.train_rows}
    a_rows = [r["prompt"] for r in data.train_rows if r["_file"] == str(a)]
    assert all(a_rows.count(p) == 3 for p in a_rows) and len(data.train) == len(data.train_rows)


# ------------------------------------------------------------------ issue 13 item 8: nothing lost silently

def test_csv_quoting_error_counts_every_line_it_loses(tok, tmp_path):
    lines = ["text,label"] + [f"tweet {i},{'pos' if i % 2 else 'neg'}" for i in range(2, 52)]
    lines[10] = '"tweet 11 broken,pos'   # line 11: a quote that never closes
    p = tmp_path / "t.csv"
    p.write_text("\n".join(lines) + "\n")
    data = build_data(DataConfig(train=str(p), on_error="skip"), tok)
    assert len(data.train_rows) + len(data.val_rows) == 9
    assert data.report["skipped_lines"] == 41
    assert "t.csv:11: bad CSV" in data.report["skipped_examples"][0]
    assert "lines 11-51 (41 lines) are not read" in data.report["skipped_examples"][0]


def test_non_string_fields_are_bad_rows_not_str_converted(tok):
    d = DataConfig(train="x")
    with pytest.raises(DataError, match=r"d.jsonl:3: field 'instruction' is a int, expected a string"):
        tokenize_rows([row(instruction=5, output="a")], "instruction", tok, d)
    with pytest.raises(DataError, match=r"d.jsonl:3: field 'output' is a list, expected a string"):
        tokenize_rows([row(instruction="x", output=["a"])], "instruction", tok, d)
    exs, rep = tokenize_rows([row(instruction="x", output=["a"]), row(4, instruction="x", output="a")], "instruction",
                             tok, DataConfig(train="x", on_error="skip"))
    assert len(exs) == 1 and rep.skipped_bad_rows == 1
    fm = Formatter("classification", tok, d, ["0", "1"])
    assert fm.content_response(row(text="t", label=1)) == ("t", "1")    # integer labels stay fine


def test_deeply_nested_json_is_a_bad_line_not_a_traceback(tmp_path):
    p = tmp_path / "deep.jsonl"
    p.write_text(json.dumps({"text": "ok"}) + "\n" + '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match="deep.jsonl:2: bad JSON: nested too deeply"):
        read_rows(p)
    res = read_rows(p, on_error="skip")
    assert len(res.rows) == 1 and res.skipped[0].line == 2
