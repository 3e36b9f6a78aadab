"""A table as a small self-contained HTML page (inline CSS, no scripts, no network): what the
Snakemake report shows inline, in an iframe, and what a reader can open on its own."""

from __future__ import annotations

import html

import pandas as pd

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 12px; color: #222; }
table { border-collapse: collapse; font-size: 14px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 6px; max-width: 70em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; }
thead th { border-bottom: 2px solid #444; text-align: center; background: #f5f5f5; }
td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.key { text-align: left; }
td.best { font-weight: 700; }
p.note { font-size: 12px; color: #555; max-width: 70em; }
"""


def to_html(df: pd.DataFrame, best: pd.DataFrame, caption: str, notes: str = "") -> str:
    """HTML page of df: index levels as leading header cells, `best` cells bold, caption above,
    notes below. Every text is escaped."""
    names = [n if n is not None else "" for n in df.index.names]
    head = "".join(f'<th class="key">{html.escape(str(n))}</th>' for n in names)
    head += "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, key in enumerate(df.index):
        keys = list(key) if isinstance(key, tuple) else [key]
        cells = "".join(f'<th class="key">{html.escape(str(k))}</th>' for k in keys)
        for j in range(len(df.columns)):
            cls = ' class="best"' if best.iat[i, j] else ""
            cells += f"<td{cls}>{html.escape(str(df.iat[i, j]))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{html.escape(notes)}</p>' if notes else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(caption[:80])}</title><style>{_CSS}</style></head><body>\n"
            f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>\n"
            f"<tbody>{''.join(rows)}</tbody></table>{note}\n</body></html>\n")
