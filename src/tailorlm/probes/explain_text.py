"""How `tailorlm explain` names and shows what it measured: one set of labels and one way of cutting
text into words, for the console (commands/explain.py) and the page (probes/explain_html.py) alike.

The two quantities an answer carries:
    p among the labels    p(label | prompt) renormalised over the run's labels: the softmax of each
                          label word's summed log-probability (a classification head: its softmax)
    log p(answer)         the natural-log probability of the answer's tokens after the prompt,
                          summed over them: the attributions' target F (a head: log p among the labels)

Words: a tokenizer cuts "united" into "un" + "ited"; for display, pieces are joined into words (a new
word starts where whitespace does), and a word's score is the sum of its pieces' (exact for integrated
gradients and Shapley values, which add up; for ablation, the sum of one-token effects).
Token text: a multi-byte character split over tokens decodes to U+FFFD piece by piece, so each
token's text is what it adds to the decoded prefix (the character lands on its last byte's token).
"""
from __future__ import annotations

import unicodedata

P_LABELS = "p among the labels"
LOGP = "log p(answer)"
HEAD_LOGP = "log p among the labels"
REPLACEMENT = "\ufffd"


def target_name(task: str) -> str:
    """What an attribution's F is for this task."""
    return HEAD_LOGP if task == "sequence_classification" else LOGP


def answer_text(it: dict, side: str) -> str:
    """"'negative' (p among the labels 0.82)" for side "tuned" or "base"; without p when none."""
    ans = it["answer"] if side == "tuned" else it["base_answer"]
    p = it["probs"][side].get(ans)
    return repr(shown(ans)) + (f" ({P_LABELS} {p:.2f})" if p is not None else "")


def target_text(attr: dict, task: str) -> str:
    """'log p(answer) -5.01': the attributed quantity and its value on the whole input."""
    return f"{target_name(task)} {attr['target_logp']:.2f}"


def words(pieces: list[str]) -> list[list[int]]:
    """Indices of `pieces` grouped into words: a piece joins the word before it unless whitespace
    separates them (it starts with whitespace, or the word, not all whitespace, ends with it)."""
    out: list[list[int]] = []
    word = ""   # the text of out[-1]
    for i, p in enumerate(pieces):
        if out and (not p or not word.strip() or not (p[0].isspace() or word[-1].isspace())):
            out[-1].append(i)   # (an empty piece, a split character's first bytes, joins; so does a
            word += p           # piece after a word of whitespace alone: ' ' + 'un' + 'bel' is one word)
        else:
            out.append([i])
            word = p
    return out


def merged(pieces: list[str], values: list[float]) -> tuple[list[str], list[float]]:
    """(words, the sum of each word's values) of per-piece values."""
    groups = words(pieces)
    return ["".join(pieces[i] for i in g) for g in groups], [sum(values[i] for i in g) for g in groups]


def word_spans(tokens: list[str], region: list[str]) -> list[list[int]]:
    """Token indices grouped into words, never across a region's edge (text / template / answer)."""
    out: list[list[int]] = []
    start = 0
    for i in range(1, len(tokens) + 1):
        if i == len(tokens) or region[i] != region[start]:
            out += [[start + j for j in g] for g in words(tokens[start:i])]
            start = i
    return out


def at_word(tokens: list[str], region: list[str], pos: int) -> str:
    """Token `pos` as shown: "'ited' in 'united'" when it is a piece of a word, else "'bag'"."""
    group = next(g for g in word_spans(tokens, region) if pos in g)
    word = "".join(tokens[i] for i in group)
    piece = repr(shown(tokens[pos]).strip() or shown(tokens[pos]))
    return piece if word.strip() == tokens[pos].strip() else f"{piece} in {shown(word.strip())!r}"


def token_strings(tok, ids: list[int]) -> list[str]:
    """Each token's text as what it adds to the decoded prefix: they join to the decoded whole, and
    a character split over several tokens shows on its last one (no U+FFFD for its first bytes)."""
    out, done = [], ""
    for j in range(len(ids)):
        text = tok.decode(ids[:j + 1], clean_up_tokenization_spaces=False).rstrip(REPLACEMENT)
        if text.startswith(done):
            out.append(text[len(done):])
            done = text
        else:   # a decoder that rewrites its prefix (rare): the token on its own
            out.append(shown(tok.decode([ids[j]], clean_up_tokenization_spaces=False)))
    return out


def vocab_text(tok, v: int) -> str:
    """One vocabulary entry for display: its text, or where it is only part of a character, say so."""
    text = tok.decode([v], clean_up_tokenization_spaces=False)
    return text if REPLACEMENT not in text else f"<part of a character, token {v}>"


def shown(text: str) -> str:
    """Text for display: a U+FFFD left by a cut multi-byte character at the end dropped, and control
    or unassigned characters (which a font draws as an empty box) written as <U+XXXX>."""
    text = text.rstrip(REPLACEMENT)
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cn", "Co", "Cs")
                   else f"<U+{ord(c):04X}>" for c in text)


def interval(row: dict) -> str:
    """'[+0.120, +0.560]', the paired 95% interval of the change; 'n=1: no interval' from one input."""
    if row.get("n", 2) < 2:
        return f"n={row.get('n')}: no interval"
    return f"[{row['lo']:+.3f}, {row['hi']:+.3f}]"
