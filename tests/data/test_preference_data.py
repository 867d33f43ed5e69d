"""Preference rows: detected, rendered (chat template when the model has one), tokenized into pairs whose
prompt tokens carry no label, batched with both sides of a pair together, and bad rows named by file and
line with their fix; a preference objective and the data format must agree."""
import pytest

from tailorlm.config import DataConfig, load_config
from tailorlm.data import DataError, build_data, detect_format
from tailorlm.data.batching import collate_pairs
from tailorlm.data.preference import tokenize_pairs
from tailorlm.data.formats import Formatter
from tailorlm.data.tokenize import IGNORE
from tailorlm.errors import ConfigError
from tailorlm.forward import batcher

from ..conftest import write_jsonl
from .test_formats import dcfg, tok  # noqa: F401  (the tiny tokenizer fixture and a DataConfig maker)

CHAT_PROMPT = "<|im_start|>user\nWhere is my bag?<|im_end|>\n<|im_start|>assistant\n"




def row(**kw):
    return {"_file": "pairs.jsonl", "_line": 3, **kw}


def pairs(tok, rows, **kw):
    d = dcfg(**kw)
    return tokenize_pairs(rows, tok, d, Formatter("preference", tok, d))


def text(tok, ex, trained: bool):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if (lab != IGNORE) == trained])


def test_detected_from_chosen_and_rejected_in_both_forms():
    assert detect_format([{"prompt": "p", "chosen": "a", "rejected": "b"}], dcfg()) == "preference"
    assert detect_format([{"messages": [{"role": "user", "content": "p"}], "chosen": "a", "rejected": "b"}],
                         dcfg()) == "preference"
    assert detect_format([{"prompt": "p", "response": "a"}], dcfg()) == "instruction"   # unchanged


def test_prompt_form_renders_through_the_chat_template_and_masks_the_prompt(tok):
    (ex,), rep = pairs(tok, [row(prompt="Where is my bag?", chosen="On its way.", rejected="Lost, sorry.")])
    assert text(tok, ex, False) == CHAT_PROMPT and text(tok, ex.rejected, False) == CHAT_PROMPT
    assert text(tok, ex, True) == "On its way.<|im_end|>\n"
    assert text(tok, ex.rejected, True) == "Lost, sorry.<|im_end|>\n"
    n_prompt = len(tok(CHAT_PROMPT, add_special_tokens=False)["input_ids"])
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt and ex.rejected.labels[:n_prompt] == [IGNORE] * n_prompt
    assert ex.labels[n_prompt:] == ex.input_ids[n_prompt:]   # every answer token is a target
    assert rep.examples == 1 and rep.tokens == len(ex.input_ids) + len(ex.rejected.input_ids)


def test_messages_form_answers_as_the_next_assistant_turn(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my bag?"}]
    (ex,), _ = pairs(tok, [row(messages=msgs, chosen="On its way.", rejected="No idea.")])
    assert text(tok, ex, False) == "<|im_start|>system\nBe brief.<|im_end|>\n" + CHAT_PROMPT
    assert text(tok, ex.rejected, True) == "No idea.<|im_end|>\n"


def test_plain_template_without_chat_template(tok):
    (ex,), _ = pairs(tok, [row(prompt="Hi", chosen="Hello.", rejected="Go away.")], chat_template="never")
    assert text(tok, ex, False) == "### Instruction:\nHi\n\n### Response:\n"
    assert text(tok, ex, True) == "Hello.<|im_end|>"


def test_batches_keep_each_pair_together_and_never_pack(tok):
    rows = [row(prompt=f"question {i}", chosen="yes " * (i + 1), rejected="no") for i in range(3)]
    exs, _ = pairs(tok, rows)
    b = collate_pairs(exs, tok.pad_token_id)
    assert b.pairs == 3 and b.n_loss == 3 and b.ids == [0, 1, 2] and b.input_ids.shape[0] == 6
    for i, ex in enumerate(exs):   # row i is pair i's chosen, row i + 3 its rejected
        assert b.input_ids[i, :len(ex.input_ids)].tolist() == ex.input_ids
        assert b.input_ids[i + 3, :len(ex.rejected.input_ids)].tolist() == ex.rejected.input_ids
    assert b.attention_mask is not None   # padded rows, not packed
    assert batcher(None, task="causal_lm", pad_id=0, packing=True, row_tokens=64, pairs=True).func is collate_pairs


@pytest.mark.parametrize("bad, says", [
    ({"prompt": "p", "chosen": "Same answer.", "rejected": "Same answer. "}, "chosen and rejected answers are identical"),
    ({"prompt": "p", "chosen": "An answer.", "rejected": ""}, "field 'rejected' is missing or empty"),
    ({"prompt": "p", "chosen": "An answer."}, "field 'rejected' is missing or empty"),
    ({"chosen": "An answer.", "rejected": "Another."}, "field 'prompt' is missing or empty"),
])
def test_bad_rows_name_file_line_and_fix(tmp_path, tok, bad, says):
    good = [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)]
    path = write_jsonl(tmp_path / "pairs.jsonl", good[:2] + [bad] + good[2:])
    with pytest.raises(DataError) as e:
        build_data(DataConfig(train=str(path), format="preference"), tok)
    assert f"{path}:3: {says}" in str(e.value) and "Fix:" in str(e.value)
    # data.on_error: skip keeps the others and counts the bad one
    data = build_data(DataConfig(train=str(path), format="preference", on_error="skip", val_max=1), tok)
    assert data.fmt == "preference" and data.report["rejected_rows"] == 1 and len(data.train) + len(data.val) == 4


def test_too_long_pairs_follow_data_too_long(tok):
    long = row(prompt="p", chosen="word " * 40, rejected="no")
    (ex,), rep = pairs(tok, [long], max_length=16)
    assert len(ex.input_ids) == 16 and rep.truncated == 1 and rep.target_tokens_lost > 0
    assert pairs(tok, [long], max_length=16, too_long="drop")[0] == []
    with pytest.raises(DataError, match="pairs.jsonl:3: the pair's longer sequence has"):
        pairs(tok, [long], max_length=16, too_long="stop")


def test_objective_and_format_must_agree(tmp_path, tok, tiny_llama):
    from tailorlm.run import build

    pref = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)])
    inst = write_jsonl(tmp_path / "i.jsonl", [{"prompt": f"q{i}", "response": "good"} for i in range(4)])
    with pytest.raises(ConfigError, match="which train.objective sft cannot learn from. Fix: train.objective: dpo"):
        load_config(raw={"model": str(tiny_llama), "data": {"train": str(pref), "format": "preference"}})
    with pytest.raises(ConfigError, match="Fix: rows with prompt"):
        load_config(raw={"model": str(tiny_llama), "data": {"train": str(inst), "format": "instruction"},
                         "train": {"objective": "dpo"}})
    for over, fix in (({"parallel": "ddp"}, "train.parallel: none"), ({"preference": {"gamma": 1.0}}, "dpo has none")):
        with pytest.raises(ConfigError, match=fix):
            load_config(raw={"model": str(tiny_llama), "data": {"train": str(pref)}, "train": {"objective": "dpo", **over}})
    with pytest.raises(ConfigError, match="eval.metric pref_accuracy scores preference pairs"):
        load_config(raw={"model": str(tiny_llama), "data": {"train": str(inst)}, "eval": {"metric": "pref_accuracy"}})
    with pytest.raises(ConfigError, match="privacy.canaries.count: 0"):
        load_config(raw={"model": str(tiny_llama), "data": {"train": str(pref)}, "train": {"objective": "dpo"},
                         "privacy": {"canaries": {"count": 2}}})
    for path, objective, fix in ((pref, "sft", "train.objective: dpo"), (inst, "simpo", "data.format: preference")):
        cfg = load_config(raw={"model": str(tiny_llama), "data": {"train": str(path), "audit": False},
                               "train": {"objective": objective}, "retention": {"reference": None}})
        with pytest.raises(ConfigError, match=fix):   # data.format: auto: refused once the rows are read
            build(cfg)


def test_audit_reads_preference_rows_as_training_does(tmp_path, tiny_llama):
    """`tailorlm audit` judges pairs with the same validator (an identical pair is a finding, fatal as it
    stops training) and tokenizes them with the model's chat template, in both row forms."""
    from tailorlm.audit.core import run_audit

    rows = [{"prompt": f"How was flight {i}?", "chosen": "Great, thanks.", "rejected": "Awful."} for i in range(6)]
    rows += [{"messages": [{"role": "user", "content": f"Refund for order {i}?"}], "chosen": "Yes.", "rejected": "No."}
             for i in range(6)]
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    report = run_audit(str(good), tokenizer=str(tiny_llama), on_error="stop")
    assert report.counts()["fatal"] == 0 and report.stats["format"] == "preference"
    assert report.stats["tokens"]["render_errors"] == 0 and report.stats["tokens"]["untrained_targets"] == 0
    bad = write_jsonl(tmp_path / "bad.jsonl", rows + [{"prompt": "p", "chosen": "Same.", "rejected": "Same."}])
    report = run_audit(str(bad), on_error="stop")
    assert report.exit_code() == 2
    (found,) = [f for f in report.findings if "identical" in f.message]
    assert found.examples[0]["file"].endswith("bad.jsonl") and found.examples[0]["line"] == 13
