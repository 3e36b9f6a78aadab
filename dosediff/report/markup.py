"""Tables out: CSV, Markdown (best cells bold) and a styled HTML page, each written atomically.

"Best" is the lowest mean for errors (MAE, |ΔD|, |ΔV|, scores), the highest for SSIM, PSNR
and gamma pass rate, and nothing for a signed mean error (neither sign is better).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dosediff.atomic import atomic_file
from dosediff.report.html import to_html

_HIGHER_RE = re.compile(r"ssim|psnr|gamma", re.IGNORECASE)
_SIGNED_RE = re.compile(r"(?<!\|)Δ")  # a signed Δ (not |Δ|): no direction is better, nothing bold
_LOWER_RE = re.compile(r"mae|score|Δ|delta|^\|?[DV](\d|\.\d|mean|min|max)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)")


def better_direction(name: str) -> str | None:
    """'higher', 'lower' or None (unknown, or a signed error) for a column header or metric name."""
    if _SIGNED_RE.search(name):
        return None
    if _HIGHER_RE.search(name):
        return "higher"
    if _LOWER_RE.search(name.strip()):
        return "lower"
    return None


def _leading_number(cell: object) -> float:
    if isinstance(cell, (int, float, np.floating, np.integer)):
        return float(cell)
    m = _NUMBER_RE.match(str(cell))
    return float(m.group(1)) if m else math.nan


def best_mask(df: pd.DataFrame, along: str = "columns") -> pd.DataFrame:
    """Boolean frame: True where a cell holds the best mean of its column (along="columns")
    or row (along="rows"), nothing for along="none"; ties (at the displayed precision) are all best; columns/rows whose
    direction is unknown have none."""
    values = df.apply(lambda col: col.map(_leading_number))
    best = pd.DataFrame(False, index=df.index, columns=df.columns)
    if along == "columns":
        for c in df.columns:
            best[c] = _best_cells(values[c], c)
    elif along == "rows":
        for i, key in enumerate(df.index):
            best.iloc[i] = _best_cells(values.iloc[i], key[-1] if isinstance(key, tuple) else key)
    elif along != "none":
        raise ValueError(f"along must be 'columns', 'rows' or 'none', got {along!r}")
    return best


def _best_cells(values: pd.Series, name: object) -> np.ndarray:
    """Where one column or row (named `name`) holds its best value; none when no direction is known."""
    direction = better_direction(str(name))
    if not direction or not values.notna().any():
        return np.zeros(len(values), dtype=bool)
    return (values == (values.min() if direction == "lower" else values.max())).to_numpy()


def to_markdown(df: pd.DataFrame, along: str | None = None) -> str:
    """GitHub Markdown of the table with the index as leading column(s), best cells in bold."""
    along = along or df.attrs.get("best_along", "columns")
    best = best_mask(df, along)
    index_names = [n if n is not None else "" for n in df.index.names]
    header = index_names + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(index_names)
                                                               + ["---:"] * len(df.columns)) + "|"]
    for i, key in enumerate(df.index):
        keys = list(key) if isinstance(key, tuple) else [key]
        cells = []
        for j, c in enumerate(df.columns):
            text = str(df.iat[i, j]).replace("|", "\\|")
            cells.append(f"**{text}**" if best.iat[i, j] else text)
        lines.append("| " + " | ".join([str(k).replace("|", "\\|") for k in keys] + cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, along: str | None = None, caption: str = "",
                notes: str = "") -> tuple[Path, Path]:
    """Write `stem`.csv, `stem`.md (best per column — or per row for per_roi_table — in bold)
    and `stem`.html (the same, styled, with the caption above and notes below), each atomically."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    along = along or df.attrs.get("best_along", "columns")
    with atomic_file(csv_path) as tmp:
        df.to_csv(tmp)
    with atomic_file(md_path) as tmp:
        text = (f"{caption}\n\n" if caption else "") + to_markdown(df, along) + (f"\n{notes}\n" if notes else "")
        Path(tmp).write_text(text, encoding="utf-8")
    write_html(df, stem.with_name(stem.name + ".html"), caption or stem.name, along, notes)
    return csv_path, md_path


def write_html(df: pd.DataFrame, path: str | Path, caption: str, along: str | None = None, notes: str = "") -> Path:
    """Only the styled HTML page of the table (best cells bold along `along`), atomically."""
    along = along or df.attrs.get("best_along", "columns")
    with atomic_file(path) as tmp:
        Path(tmp).write_text(to_html(df, best_mask(df, along), caption, notes), encoding="utf-8")
    return Path(path)
