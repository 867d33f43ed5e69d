"""Tests for the tokenised view of the audit, with a tiny BPE tokenizer trained offline on the
spot and chat templates written here - one correct, and broken ones the audit must flag."""
from __future__ import annotations

import json
import sys
import types

import pytest

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from tailorlm.audit import run_audit  # noqa: E402
from tailorlm.audit.schema import make_layout  # noqa: E402
from tailorlm.audit.tokens import IGNORE, check_tokens, pipeline_producer, template_producer  # noqa: E402

GOOD = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# drops the final assistant message, as templates meant only for generation do
DROP_LAST = ("{% for m in messages %}{% if not (loop.last and m.role == 'assistant') %}"
             "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# renders earlier assistant turns differently from the last one (like reasoning-stripping
# templates): not prefix-consistent, so earlier turns cannot be labelled
REWRITES_EARLIER = ("{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}"
                    "<|im_start|>assistant\n(earlier reply)<|im_end|>\n{% else %}"
                    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
                    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# no end-of-turn token at all: the model never sees where an answer stops
NO_EOS = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
          "{% if add_generation_prompt %}assistant: {% endif %}")

CORPUS = ["What colour is the sky on a clear day?", "The sky is blue on a clear day.",
          "Name a fruit that is yellow.", "A banana is yellow.", "Tell me a short fact.",
          "Water boils at one hundred degrees.", "Thanks, and another one?",
          "Honey never spoils.", "system user assistant tool"]


def make_tokenizer(template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")
    fast.chat_template = template
    return fast


def chat(*turns):
    roles = ["user", "assistant"] * 3
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, turns)]}


ROWS = [chat("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
        chat("Name a fruit that is yellow.", "A banana is yellow."),
        chat("Tell me a short fact.", "Water boils at one hundred degrees.",
             "Thanks, and another one?", "Honey never spoils.")]


def write(tmp_path, rows, name="chat.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def tok_findings(report):
    return {f.message.split(" (")[0]: f for f in report.findings if f.check == "tokens"}


def pipeline_available() -> bool:
    try:
        from tailorlm.data.tokenize import tokenize_rows  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=["pipeline", "fallback"])
def path(request, monkeypatch):
    """Run a test through the pipeline's tokenize_rows and through the chat-template fallback."""
    if request.param == "pipeline" and not pipeline_available():
        pytest.skip("tailorlm.data.tokenize not available")
    if request.param == "fallback":
        monkeypatch.setitem(sys.modules, "tailorlm.data.tokenize", None)  # import now fails
    return request.param


PRODUCER = {"pipeline": "pipeline tokenize_rows", "fallback": "chat template fallback"}


def producer_for(path, tok, layout, rows):
    if path == "pipeline":
        return pipeline_producer(tok, layout, rows)
    return template_producer(tok, layout)


def test_good_template_trains_every_assistant_turn_and_eos(tmp_path, path):
    tok = make_tokenizer(GOOD)
    f = write(tmp_path, ROWS)
    r = run_audit(f, tokenizer=tok)
    st = r.stats["tokens"]
    assert st["producer"] == PRODUCER[path]
    assert (st["rows"], st["zero_trainable"], st["untrained_targets"], st["no_terminator_trained"],
            st["trained_prompt"], st["render_errors"]) == (3, 0, 0, 0, 0, 0)
    assert [f.severity for f in r.findings if f.check == "tokens"] == ["info"]
    # the labelled tokens are exactly the answers and their terminators
    rows = [dict(row, _file=str(f), _line=i + 1) for i, row in enumerate(ROWS)]
    ids, labels = producer_for(path, tok, make_layout(rows), rows)(rows[2])
    trained = tok.decode([t for t, l in zip(ids, labels) if l != IGNORE])
    assert trained == "Water boils at one hundred degrees.<|im_end|>\nHoney never spoils.<|im_end|>\n"


def test_template_dropping_last_assistant_is_flagged(tmp_path, path):
    r = run_audit(write(tmp_path, ROWS), tokenizer=make_tokenizer(DROP_LAST))
    f = tok_findings(r)
    assert r.exit_code() == 2            # no row trains anything: the run would fail
    if path == "pipeline":       # the pipeline refuses such rows: the audit says which and why
        bad = f["cannot tokenise/render the row"]
        assert bad.count == 3 and [e["line"] for e in bad.examples] == [1, 2, 3]
        assert "does not render turn 1 as an extension" in bad.examples[0]["text"]
        return
    unl = f["assistant turn gets no labels"]
    assert unl.count == 3 and unl.examples[0]["line"] == 1
    assert unl.examples[0]["text"] == "assistant turn 1"
    # in the two-turn row each turn is "last" when its labels are worked out, so both are lost
    assert unl.examples[2]["text"] == "assistant turn 1, assistant turn 3"
    assert f["zero trainable tokens: the row teaches nothing"].count == 3


def test_template_rewriting_earlier_turns_is_flagged(tmp_path, path):
    r = run_audit(write(tmp_path, ROWS), tokenizer=make_tokenizer(REWRITES_EARLIER))
    f = tok_findings(r)
    if path == "pipeline":
        bad = f["cannot tokenise/render the row"]
        assert bad.count == 1 and bad.line == 3 and "turn 3" in bad.examples[0]["text"]
        return
    unl = f["assistant turn gets no labels"]
    assert unl.count == 1 and unl.line == 3 and unl.examples[0]["text"] == "assistant turn 1"
    # only the last turn is labelled; the rewritten earlier turn gets no labels at all
    tok = make_tokenizer(REWRITES_EARLIER)
    ids, labels = template_producer(tok, make_layout(ROWS))(ROWS[2])
    assert tok.decode([t for t, l in zip(ids, labels) if l != IGNORE]) == "Honey never spoils.<|im_end|>\n"


def test_template_without_eos_is_flagged(tmp_path, path):
    r = run_audit(write(tmp_path, ROWS), tokenizer=make_tokenizer(NO_EOS))
    f = tok_findings(r)
    assert f["trained span does not end in EOS or a turn terminator: the model may not learn to stop"].count == 3
    assert "assistant turn gets no labels" not in f and "cannot tokenise/render the row" not in f


LONG_ROWS = [{"prompt": "Tell me a short fact. " * 6, "response": "Honey never spoils."},
             {"prompt": "Name a fruit that is yellow.", "response": "A banana is yellow. " * 8},
             {"prompt": "Tell me a short fact.", "response": "Water boils at one hundred degrees."}]


def test_truncation_counts_lost_and_dropped_targets(tmp_path, path):
    tok = make_tokenizer(GOOD)
    f = write(tmp_path, LONG_ROWS, "ins.jsonl")
    rows = [dict(row, _file=str(f), _line=i + 1) for i, row in enumerate(LONG_ROWS)]
    produce = producer_for(path, tok, make_layout(rows), rows)
    encoded = [produce(r) for r in rows]
    limit = len(encoded[2][0])            # the short row just fits
    assert all(len(ids) > limit for ids, _ in encoded[:2])
    assert sum(l != IGNORE for l in encoded[0][1][:limit]) == 0   # row 1's answer lies past it
    lost = sum(sum(l != IGNORE for l in labels[limit:]) for _, labels in encoded[1:])
    lost += sum(l != IGNORE for l in encoded[0][1])
    r = run_audit(f, tokenizer=tok, max_length=limit)
    st = r.stats["tokens"]
    # as training truncates (issue 25 item 6): row 1's prompt is cut and its answer kept, row 2's answer
    # alone is over budget and loses its end; the audit's numbers are the pipeline's own
    from tailorlm.config import DataConfig
    from tailorlm.data import tokenize_rows

    _, rep = tokenize_rows(rows, "instruction", tok, DataConfig(train="x", max_length=limit))
    assert (st["truncated"], st["dropped"]) == (rep.truncated, rep.dropped_too_long + rep.dropped_no_target) == (2, 0)
    assert st["target_tokens_lost"] == rep.target_tokens_lost < lost
    assert r.stats["rows"]["train"]["truncated"] == 2
    msgs = tok_findings(r)
    assert f"longer than max_length={limit}, dropped" not in msgs
    assert msgs[f"truncated at max_length={limit}, losing target tokens"].line == 2
    # with data.too_long: drop both long rows go, with all their targets; with stop it is fatal
    r = run_audit(f, tokenizer=tok, max_length=limit, pipeline_options={"too_long": "drop"})
    st = r.stats["tokens"]
    assert (st["truncated"], st["dropped"]) == (0, 2)
    assert st["target_tokens_lost"] == sum(sum(l != IGNORE for l in lab) for _, lab in encoded[:2])
    r = run_audit(f, tokenizer=tok, max_length=limit, pipeline_options={"too_long": "stop"})
    assert r.exit_code() == 2


def test_chat_data_without_template_is_fatal(tmp_path):
    r = run_audit(write(tmp_path, ROWS), tokenizer=make_tokenizer(None))
    assert r.exit_code() == 2
    assert any(f.check == "tokens" and "no chat_template" in f.message for f in r.findings)


def test_custom_producer_and_prompt_leak():
    tok = make_tokenizer(GOOD)
    layout = make_layout(ROWS)

    def all_trained(row):               # a producer that forgets to mask the prompt
        ids, _ = template_producer(tok, layout)(row)
        return ids, list(ids)

    findings, stats = check_tokens(ROWS, layout, tok, producer=all_trained)
    assert stats["producer"] == "custom" and stats["trained_prompt"] == 3
    findings, stats = check_tokens(ROWS, layout, tok, producer=lambda row: ([5, 6], [IGNORE, IGNORE]))
    assert stats["zero_trainable"] == 3


def test_pipeline_tokenize_rows_is_used_when_present(tmp_path, monkeypatch):
    tok = make_tokenizer(GOOD)
    calls = []

    def tokenize_rows(rows, fmt, tokenizer, dcfg, labels=None):
        calls.append((len(rows), fmt, dcfg.max_length))
        exs = [types.SimpleNamespace(input_ids=[1, 2, 3], labels=[IGNORE, IGNORE, IGNORE],
                                     file=r["_file"], line=r["_line"]) for r in rows[2:]]
        # skips the first row with a reason, drops the second silently, trains nothing in the third
        rep = types.SimpleNamespace(problems=[f"{rows[0]['_file']}:{rows[0]['_line']}: odd row"])
        return exs, rep

    fake = types.ModuleType("tailorlm.data.tokenize")
    fake.tokenize_rows = tokenize_rows
    monkeypatch.setitem(sys.modules, "tailorlm.data.tokenize", fake)
    r = run_audit(write(tmp_path, ROWS), tokenizer=tok)
    assert calls == [(3, "chat", 10 ** 9)]
    st = r.stats["tokens"]
    assert st["producer"] == "pipeline tokenize_rows" and st["zero_trainable"] == 2
    skipped = tok_findings(r)["cannot tokenise/render the row"]
    assert skipped.line == 1 and skipped.examples[0]["text"] == "the pipeline skips it: odd row"


def test_text_format_trains_eos(tmp_path, path):
    tok = make_tokenizer(GOOD)
    r = run_audit(write(tmp_path, [{"text": c} for c in CORPUS[:4]], "t.jsonl"), tokenizer=tok)
    st = r.stats["tokens"]
    assert st["no_terminator_trained"] == 0 and st["zero_trainable"] == 0
    layout = make_layout([{"text": "x"}])
    ids, labels = template_producer(tok, layout)({"text": CORPUS[0]})
    assert ids[-1] == tok.eos_token_id and labels == ids
