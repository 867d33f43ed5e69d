"""PII check and redaction: secrets (API tokens, private keys), e-mail, phone, card, IBAN, SSN, IPv4 and
user handles.

Fine-tuned models regurgitate rare strings, and an e-mail address or card number seen a few
times in training can come back verbatim. Detection is precise rather than greedy: card numbers
must pass the Luhn checksum and IBANs the ISO 13616 mod-97 check, so order numbers and random
digit runs are not flagged; phones need 10+ digits or a leading "+"/"(", and SSNs the dashed
AAA-GG-SSSS shape with the never-issued ranges excluded.

Kinds are matched in a fixed order and each claims its span, so one string is one finding (an
e-mail's "@name" is not also a handle). A card- or IBAN-shaped run that fails its checksum also
claims its span: it is an invalid card or IBAN, not a phone number.

Secrets are matched by the shapes their issuers give them (Hugging Face hf_..., OpenAI-style sk-...,
AWS access key ids AKIA.../ASIA..., GitHub ghp_/gho_/ghu_/ghs_/ghr_ and github_pat_..., PEM private-key
blocks): a token in a training row is a credential the tuned model may repeat, and the report itself
must not be a second copy of it.

Reports show masked values only ("j***@e***.com", "**** **** **** 1111", "hf_***"); `redact_file`
writes a copy with placeholders ([SECRET], [EMAIL], [PHONE], ...) in the input's own format.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from .report import INFO, WARNING, Finding, MAX_EXAMPLES, example

CHECK = "pii"
PLACEHOLDER = {"secret": "[SECRET]", "email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "ssn": "[SSN]",
               "ip": "[IP]", "phone": "[PHONE]", "handle": "[HANDLE]"}
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_KEY_BLOCK = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
_TOKEN_PREFIX = re.compile(rf"{_KEY_BLOCK}|github_pat_|gh[pousr]_|hf_|sk-|AKIA|ASIA")
PATTERNS = [  # order matters: earlier kinds claim their spans first
    # a private-key block to its END line (or its base64 body, when cut), then API tokens by issuer shape
    ("secret", re.compile(rf"{_KEY_BLOCK}(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[\sA-Za-z0-9+/=]{{16,}})"
                          r"|(?<![\w-])(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}"
                          r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})(?![\w-])")),
    ("email", re.compile(r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")),
    # cards as printed: one digit run, groups of four, or Amex 4-6-5
    ("card", re.compile(r"(?<![\d+-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5})(?![\d-])")),
    ("ssn", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")),
    ("ip", re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\d|\.\d)")),
    ("phone", re.compile(r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?|\d{1,3}[ .-])?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w:.-]\w|[\w-])")),
    # "*" ends no handle: keeps masking idempotent ("@j***" is not a handle "@j")
    ("handle", re.compile(r"(?<![\w@.])@[A-Za-z0-9_]{1,30}(?![\w@*])")),
]
SEVERITY = {k: WARNING for k in PLACEHOLDER} | {"handle": INFO}  # handles are public, often fine
_DATE = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{2,4}")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(code: str) -> bool:
    code = code.replace(" ", "")
    if not 15 <= len(code) <= 34 or not code[:2].isalpha() or not code[2:4].isdigit():
        return False
    moved = code[4:] + code[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _valid(kind: str, s: str) -> tuple[bool, str]:
    """(is PII, the part that is). IBAN matches may run into a following word: drop trailing
    space-separated groups until the checksum holds."""
    if kind == "iban":
        parts = s.split(" ")
        while parts:
            cand = " ".join(parts)
            if iban_ok(cand):
                return True, cand
            parts.pop()
        return False, s
    digits = re.sub(r"\D", "", s)
    if kind == "card":
        return luhn_ok(digits) and len(set(digits)) > 1, s
    if kind == "phone":
        if _DATE.search(s) or not 7 <= len(digits) <= 15:
            return False, s
        return len(digits) >= 10 or s.startswith(("+", "(")), s
    return True, s


def find_pii(text: str) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, value) for each PII span, in text order. Each kind runs on the text with
    the spans earlier kinds claimed blanked out (NUL, same length, so offsets hold): a later
    pattern can neither match inside them nor run across them."""
    work = text
    hits = []
    for kind, rx in PATTERNS:
        if kind == "handle" and "@" not in work:
            continue
        claimed = []
        for m in rx.finditer(work):
            ok, value = _valid(kind, m.group())
            start = m.start()
            if ok:
                hits.append((kind, start, start + len(value), value))
                claimed.append((start, start + len(value)))
            elif kind in ("card", "iban"):  # a failed checksum is not a phone number either
                claimed.append(m.span())
        if claimed:
            parts, pos = [], 0
            for s, e in claimed:
                parts += [work[pos:s], "\0" * (e - s)]
                pos = e
            work = "".join(parts) + work[pos:]
    return sorted(hits, key=lambda h: h[1])


def mask(kind: str, value: str) -> str:
    """Enough of the value to recognise its shape, not enough to recover it."""
    if kind == "email":
        local, _, domain = value.partition("@")
        tld = domain.rsplit(".", 1)[-1]
        return f"{local[:1]}***@{domain[:1]}***.{tld}"
    if kind == "handle":
        return value[:2] + "***"
    if kind == "ip":
        return value.split(".")[0] + ".*.*.*"
    if kind == "secret":   # the issuer's prefix says what leaked; nothing of the secret itself
        prefix = _TOKEN_PREFIX.match(value)
        return (prefix.group() if prefix else "") + "***"
    keep = {"card": 4, "ssn": 4, "phone": 2, "iban": 2}[kind]
    n_alnum = sum(c.isalnum() for c in value)
    out, seen = [], 0
    for i, c in enumerate(value):
        if c.isalnum():
            seen += 1
            if kind == "iban" and seen <= 2:
                out.append(c)
                continue
            out.append(c if seen > n_alnum - keep else "*")
        else:
            out.append(c)
    return "".join(out)


def replace_spans(text: str, hits, how) -> str:
    out, pos = [], 0
    for kind, s, e, v in hits:
        out.append(text[pos:s])
        out.append(how(kind, v))
        pos = e
    out.append(text[pos:])
    return "".join(out)


def mask_text(text: str) -> str:
    """The text with every PII value masked, for quoting rows in a report."""
    return replace_spans(text, find_pii(text), mask)


def mask_secrets(text: str) -> str:
    """Only secrets masked: for text that is not a data row (a finding's message), where a phone-
    or date-like number is the report's own and must stay readable."""
    return replace_spans(text, [h for h in find_pii(text) if h[0] == "secret"], mask)


def _strings(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from _strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from _strings(x)


def check_pii(rows: list[dict]) -> tuple[list[Finding], dict]:
    """Scan every string field of every row (nested chat messages included); one finding per
    kind and file, with masked examples."""
    occ, nrows = Counter(), Counter()          # keyed by (kind, file)
    examples: dict[tuple[str, str], list] = {}
    first: dict[tuple[str, str], dict] = {}
    for row in rows:
        kinds_here = set()
        for s in _strings({k: v for k, v in row.items() if not k.startswith("_")}):
            hits = find_pii(s)
            if not hits:
                continue
            masked = replace_spans(s, hits, mask)
            for kind, _, _, value in hits:
                key = (kind, row["_file"])
                occ[key] += 1
                kinds_here.add(key)
                first.setdefault(key, row)
                exs = examples.setdefault(key, [])
                if len(exs) < MAX_EXAMPLES and all(e["value"] != mask(kind, value) for e in exs):
                    exs.append(example(row, masked, value=mask(kind, value)))
        nrows.update(kinds_here)
    order = list(PLACEHOLDER)
    findings = [Finding(SEVERITY[kind], CHECK,
                        f"{kind}: {nrows[key]} rows, {occ[key]} occurrences (masked examples; "
                        f"--redact writes a copy with {PLACEHOLDER[kind]})",
                        file, first[key]["_line"], examples[key], nrows[key])
                for key in sorted(examples, key=lambda k: (order.index(k[0]), k[1]))
                for kind, file in [key]]
    stats = {}
    for kind in order:
        r = sum(n for (k, _), n in nrows.items() if k == kind)
        if r:
            stats[kind] = {"rows": r, "occurrences": sum(n for (k, _), n in occ.items() if k == kind)}
    return findings, stats


def redact_file(src: str | Path, dst: str | Path) -> dict:
    """Write a redacted copy of src to dst in the same format; src is only read. Bytes that are
    not valid UTF-8 pass through unchanged (surrogateescape), so the copy differs only where PII
    was replaced. Returns placeholder counts."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"--redact must name a new file, not the input {src}")
    counts: Counter = Counter()

    def red(text: str) -> str:
        hits = find_pii(text)
        counts.update(k for k, *_ in hits)
        return replace_spans(text, hits, lambda k, v: PLACEHOLDER[k])

    suffix = src.suffix.lower()
    if suffix == ".parquet":
        import datasets
        rows = datasets.Dataset.from_parquet(str(src)).to_list()
        datasets.Dataset.from_list([_redact_value(r, red) for r in rows]).to_parquet(str(dst))
    elif suffix in (".jsonl", ".json"):
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for raw in fin:
                fout.write(_redact_json_line(raw, red))
    elif suffix == ".csv":
        # Placeholders hold no comma, quote or newline and no pattern crosses one, so redacting
        # the raw text line by line keeps the CSV structure (and its quoting) exactly.
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for raw in fin:
                fout.write(red(raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"))
    else:
        raise ValueError(f"cannot redact {src.suffix!r} files; use .jsonl, .csv or .parquet")
    return dict(counts)


def _redact_json_line(raw: bytes, red) -> bytes:
    text = raw.decode("utf-8", "surrogateescape")
    body = text.rstrip("\r\n")
    ending = text[len(body):]
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return red(text).encode("utf-8", "surrogateescape")  # broken line: redact the raw text
    new = _redact_value(obj, red)
    if new == obj:
        return raw          # untouched lines stay byte-identical
    return (json.dumps(new, ensure_ascii=False) + ending).encode("utf-8", "surrogateescape")


def _redact_value(v, red):
    if isinstance(v, str):
        return red(v)
    if isinstance(v, dict):
        return {k: _redact_value(x, red) for k, x in v.items()}
    if isinstance(v, list):
        return [_redact_value(x, red) for x in v]
    return v
