"""The look shared by tailorlm's HTML pages (report.html, continual.html): plain system fonts, light
tables with right-aligned numbers, inline only (the pages must open with no network)."""

STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:6px 10px;text-align:right}
th{background:#f4f4f4}td.name{text-align:left}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.note{color:#555}svg text{font:12px system-ui,sans-serif}"""
