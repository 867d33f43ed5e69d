"""The one page shell of tailorlm's HTML pages (report.html, compare.html, continual.html, explain.html):
the head (charset, a Content-Security-Policy, viewport, title), the style and the body around each
page's own content. Plain system fonts, light tables with right-aligned numbers, inline only: the
pages must open with no network, and `default-src 'none'` makes a browser refuse anything remote
even if a fragment asked for it. It imports nothing of tailorlm, so every layer may draw a page.
"""
from __future__ import annotations

from html import escape

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:6px 10px;text-align:right}
th{background:#f4f4f4}td.name{text-align:left}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.note{color:#555}svg text{font:12px system-ui,sans-serif}"""


def page(title: str, body: str, style: str = STYLE) -> str:
    """A whole self-contained page: `title` (escaped here), `body` (HTML), `style` (CSS, STYLE by default)."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
            f'content="{CSP}"><meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{style}</style></head><body>{body}</body></html>")
