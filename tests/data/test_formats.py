"""Literal examples: each format's tokens and labels, truncation counts, bad rows named by line."""
import pytest
from transformers import AutoTokenizer

from tailorlm.config import DataConfig
from tailorlm.data import DataError, Formatter, read_rows, tokenize_rows
from tailorlm.data.tokenize import IGNORE
from tailorlm.models.load import set_pad_token

from ..conftest import write_jsonl


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    t = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    set_pad_token(t)
    return t


def dcfg(**kw):
    return DataConfig(train="unused.jsonl", **kw)


def trained_text(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE])


def untrained_text(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE])


def row(**kw):
    return {"_file": "data.jsonl", "_line": 7, **kw}


def test_instruction_through_chat_template_masks_prompt_and_trains_terminator(tok):
    (ex,), rep = tokenize_rows([row(prompt="Where is my bag?", response="On its way.")], "instruction", tok, dcfg())
    assert untrained_text(tok, ex) == "<|im_start|>user\nWhere is my bag?<|im_end|>\n<|im_start|>assistant\n"
    assert trained_text(tok, ex) == "On its way.<|im_end|>\n"
    assert tok.convert_tokens_to_ids("<|im_end|>") in [lab for lab in ex.labels if lab != IGNORE]
    assert rep.examples == 1 and rep.truncated == 0


def test_alpaca_fields_without_chat_template_train_eos(tok):
    r = row(instruction="Translate", input="bonjour", output="hello")
    (ex,), _ = tokenize_rows([r], "instruction", tok, dcfg(chat_template="never"))
    assert untrained_text(tok, ex) == "### Instruction:\nTranslate\n\nbonjour\n\n### Response:\n"
    assert trained_text(tok, ex) == "hello<|im_end|>"
    assert ex.labels[-1] == tok.eos_token_id


def test_chat_trains_every_assistant_turn_and_nothing_else(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."}]
    (ex,), _ = tokenize_rows([row(messages=msgs)], "chat", tok, dcfg())
    assert trained_text(tok, ex) == "Hello!<|im_end|>\nGoodbye.<|im_end|>\n"
    assert untrained_text(tok, ex) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                                       "<|im_start|>assistant\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(msgs, tokenize=False)


def test_chat_rows_without_assistant_or_with_bad_roles_are_named(tok):
    with pytest.raises(DataError, match=r"data.jsonl:7: no assistant turn"):
        tokenize_rows([row(messages=[{"role": "user", "content": "Hi"}])], "chat", tok, dcfg())
    with pytest.raises(DataError, match=r"data.jsonl:7: bad chat role \(message 0 has role 'robot'"):
        tokenize_rows([row(messages=[{"role": "robot", "content": "Hi"}])], "chat", tok, dcfg())


def test_classification_trains_the_label_word(tok):
    d = dcfg(prompt_template="Sentiment ({labels})? {text}")
    fm = Formatter("classification", tok, d, ["negative", "positive"])
    (ex,), _ = tokenize_rows([row(text="great flight", label="positive")], "classification", tok, d, formatter=fm)
    assert "Sentiment (negative, positive)? great flight" in untrained_text(tok, ex)
    assert trained_text(tok, ex) == "positive<|im_end|>\n"


def test_text_documents_are_cut_into_blocks_all_trained(tok):
    text = "the flight was delayed again and again " * 20
    exs, rep = tokenize_rows([row(text=text)], "text", tok, dcfg(max_length=32))
    n = len(tok(text + tok.eos_token, add_special_tokens=False)["input_ids"])
    assert [len(e.input_ids) for e in exs][:-1] == [32] * (n // 32)
    assert sum(len(e.input_ids) for e in exs) == n - (n % 32 if n % 32 == 1 else 0)
    assert all(e.labels == e.input_ids for e in exs) and exs[-1].input_ids[-1] == tok.eos_token_id
    assert rep.truncated == 0


def test_too_long_policies_are_counted(tok):
    rows = [row(prompt="short", response="fine"), row(prompt="long " * 80, response="cut"),
            {**row(prompt="p", response="also long " * 40), "_line": 9}]
    exs, rep = tokenize_rows(rows, "instruction", tok, dcfg(max_length=64, too_long="truncate"))
    # row 2: its prompt is cut and its answer kept; row 3's answer alone is over budget and loses its end
    assert rep.truncated == 2 and rep.dropped_no_target == 0 and len(exs) == 3
    assert trained_text(tok, exs[1]) == "cut<|im_end|>\n"
    assert rep.target_tokens_lost > 0 and all(len(e.input_ids) <= 64 for e in exs)
    exs, rep = tokenize_rows(rows, "instruction", tok, dcfg(max_length=64, too_long="drop"))
    assert rep.dropped_too_long == 2 and len(exs) == 1 and rep.truncated == 0
    with pytest.raises(DataError, match=r"data.jsonl:7: example has \d+ tokens, more than data.max_length=64"):
        tokenize_rows(rows, "instruction", tok, dcfg(max_length=64, too_long="stop"))


def test_bad_rows_stop_with_file_and_line_or_are_skipped_and_counted(tok):
    rows = [row(prompt="a", response="b"), {**row(prompt="a"), "_line": 12}]
    with pytest.raises(DataError, match=r"data.jsonl:12: field 'response' is missing or empty"):
        tokenize_rows(rows, "instruction", tok, dcfg())
    exs, rep = tokenize_rows(rows, "instruction", tok, dcfg(on_error="skip"))
    assert len(exs) == 1 and rep.skipped_bad_rows == 1 and "data.jsonl:12" in rep.problems[0]


def test_malformed_lines_are_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "broken"\n\n[1, 2]\n{"text": "caf\xe9"}\n{"text": "fine"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: bad JSON"):
        read_rows(p)
    res = read_rows(p, on_error="skip")
    assert [r["_line"] for r in res.rows] == [1, 6]
    assert [(x.line, x.message.split(":")[0]) for x in res.skipped] == [
        (2, "bad JSON"), (4, "expected a JSON object, got list"), (5, "not valid UTF-8 (invalid continuation byte at byte 13)")]


def test_csv_rows_keep_their_line_numbers(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\nhello,pos\n"two\nlines",neg\na,b,c\nlast,neu\n')
    res = read_rows(p, on_error="skip")
    assert [(r["text"], r["_line"]) for r in res.rows] == [("hello", 2), ("two\nlines", 3), ("last", 6)]
    assert str(res.skipped[0]).endswith("d.csv:5: expected 2 fields (text, label), got 3")


def test_csv_line_numbers_survive_bare_carriage_returns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_bytes(b'text,label\r\n"x\ry",a\r\nz\rw,b\r\nlast,c\r\n')
    res = read_rows(p)
    assert [(r["text"], r["_line"]) for r in res.rows] == [("x y", 2), ("z w", 3), ("last", 4)]
    assert res.repaired == 2


def test_parquet_is_read_through_datasets(tmp_path):
    import datasets

    p = tmp_path / "d.parquet"
    datasets.Dataset.from_list([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]).to_parquet(str(p))
    assert [(r["text"], r["_line"]) for r in read_rows(p).rows] == [("a", 1), ("b", 2)]


def test_chat_data_on_a_model_without_template_stops_with_the_fix(tok):
    import copy

    plain = copy.deepcopy(tok)
    plain.chat_template = None
    with pytest.raises(DataError, match="has no chat template. Fix:"):
        Formatter("chat", plain, dcfg())


def test_pad_token_is_never_eos(tok):
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id


def test_format_is_detected_from_fields(tmp_path):
    from tailorlm.data import detect_format

    assert detect_format([row(messages=[])], dcfg()) == "chat"
    assert detect_format([row(text="a", label="b")], dcfg()) == "classification"
    assert detect_format([row(instruction="a", output="b")], dcfg()) == "instruction"
    assert detect_format([row(text="a")], dcfg()) == "text"
    with pytest.raises(DataError, match="data.jsonl:7: cannot tell the data format"):
        detect_format([row(foo="a")], dcfg())
