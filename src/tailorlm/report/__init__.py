"""`tailorlm report`: a run (or several overlaid) as one self-contained HTML page.

collect.read_run reads a run directory (finished, still going, or killed), charts/tables turn it into
inline SVG and HTML tables (classify: a classifier's collapse banner, per-class scores and confusion
matrices, which `compare` may show too), page.render assembles report.html; svg has the chart
primitives that `tailorlm compare` draws with too.
"""
