"""Paper-style tables from the evaluation's long per-case metric tables (pandas, no torch).

Input contract (written by the evaluate stage, one CSV per experiment): columns experiment,
case, roi, metric, unit, reference, predicted, value, note. `value` is what is summarised:
|predicted - reference| for DVH metrics, the metric itself for image metrics (roi "Body")
and for case-level scores (roi "All").

Conventions of every table here:
- mean ± std over cases, std the sample standard deviation (ddof = 1; "nan" for one case);
- a NaN value (ROI absent, empty mask, ...) is left out of that cell's mean and std; the
  cell then says how many cases it used, e.g. "0.812 ± 0.204 (n=3/4)", where 4 is the number
  of cases the experiment evaluated; summary() also lists the reasons from the note column;
- "best" is the lowest mean for errors (MAE, |ΔD|, |ΔV|, dose and volume scores) and the
  highest for SSIM, PSNR and gamma pass rate, none for a signed mean; markup.write_table bolds it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dosediff.errors import input_error
from dosediff.metrics.evaluate import openkbp_scores_from_rows

PER_CASE_COLUMNS = ["experiment", "case", "roi", "metric", "unit", "reference", "predicted", "value", "note"]
SEED_COLUMNS = ["experiment", "seed", "case", "metric", "value"]

# The paper's Table 1/2 columns: (roi, metric) -> header.
DEFAULT_COLUMNS: list[tuple[str, str]] = [
    ("Body", "MAE"), ("Body", "SSIM"), ("Body", "PSNR"), ("Body", "gamma_pass_rate"), ("All", "dose_score"),
    ("All", "dose_bias"), ("All", "volume_score"), ("All", "volume_bias"),
]
# On OpenKBP data the benchmark's official scores lead the table.
OPENKBP_COLUMNS: list[tuple[str, str]] = [("All", "openkbp_dose_score"), ("All", "openkbp_dvh_score")]
_HEADERS = {
    "MAE": "MAE (Gy)", "SSIM": "SSIM", "PSNR": "PSNR (dB)", "gamma_pass_rate": "Gamma pass rate (%)",
    "dose_score": "Dose score (Gy)", "volume_score": "Volume score (%)",
    "dose_bias": "Mean ΔD (Gy)", "volume_bias": "Mean ΔV (%)",
    "openkbp_dose_score": "OpenKBP dose score (Gy)", "openkbp_dvh_score": "OpenKBP DVH score (Gy)",
}
_BIAS_METRICS = ("dose_bias", "volume_bias")  # signed means: shown with their sign


# ---------------------------------------------------------------- input

def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str,
                    fix: str = "regenerate the table with `dosediff evaluate` (or fix the column names)") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise input_error(what, f"columns {list(df.columns)} lack {missing}", f"the columns {list(columns)}", fix)


def read_per_case(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-case CSVs (one per experiment), checking the contract's columns."""
    frames = []
    for p in paths:
        df = pd.read_csv(p, keep_default_na=True)
        require_columns(df, PER_CASE_COLUMNS, str(p))
        frames.append(df)
    if not frames:
        raise input_error("per-case metric tables", "no files", "at least one metrics/{experiment}/per_case.csv",
                          "run the evaluate stage for the experiments in the report")
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- formatting helpers

def format_mean_std(mean: float, std: float, n: int, n_total: int, decimals: int = 3, sign: bool = False) -> str:
    """'mean ± std' (mean with an explicit + when sign; the mean alone from a single case, whose
    std is undefined), with '(n=used/total)' when some cases had no value; 'n/a' when none had."""
    if n == 0 or math.isnan(mean):
        return "n/a"
    text = f"{mean:{'+' if sign else ''}.{decimals}f}" + (f" ± {std:.{decimals}f}" if n > 1 else "")
    if n < n_total:
        text += f" (n={n}/{n_total})"
    return text


def metric_label(metric: str, unit: str | float | None, roi: str | None = None, signed: bool = False) -> str:
    """Human header for a metric: 'MAE (Gy)', '|ΔD95| (Gy)', signed 'ΔV30 (%)'."""
    if metric in _HEADERS:
        return _HEADERS[metric]
    unit_text = f" ({unit})" if isinstance(unit, str) and unit else ""
    if signed:
        return f"Δ{metric}{unit_text}"
    if roi not in ("Body", "All"):
        return f"|Δ{metric}|{unit_text}"  # DVH metrics are summarised as |pred - ref|
    return f"{metric}{unit_text}"


def _first_unit(units: pd.Series) -> str:
    u = units.dropna()
    return str(u.iloc[0]) if len(u) else ""


# ---------------------------------------------------------------- tables

def summary(per_case: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """Mean ± std over cases per (experiment, roi, metric).

    Columns: experiment, roi, metric, unit, n (cases with a value), n_cases (cases the
    experiment evaluated), mean, std (ddof=1), text ("mean ± std", "(n=k/N)" appended when
    k < N), missing (the notes of the NaN cells with their counts, e.g. "ROI absent: 1"),
    signed_mean, signed_std, signed_text: the same of predicted − reference where the rows
    carry both (DVH metrics; NaN and "" elsewhere).
    """
    require_columns(per_case, ["experiment", "case", "roi", "metric", "value"], "per-case metric table")
    df = per_case.copy()
    if "unit" not in df:
        df["unit"] = ""
    if "note" not in df:
        df["note"] = np.nan
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["signed"] = _signed(df)
    n_cases = df.groupby("experiment", sort=False)["case"].nunique()
    rows = []
    for (exp, roi, metric), g in df.groupby(["experiment", "roi", "metric"], sort=False):
        v = g["value"].to_numpy(dtype=float)
        ok = ~np.isnan(v)  # an infinite PSNR (identical doses) is a value, not a gap
        used = v[ok]
        n = int(used.size)
        mean = float(used.mean()) if n else math.nan
        std = float(used.std(ddof=1)) if n > 1 else math.nan
        notes = g.loc[~ok, "note"].astype(object).fillna("no reason given").astype(str).value_counts()
        sm, ss, st = _mean_std_text(g["signed"].to_numpy(dtype=float), int(n_cases[exp]), decimals)
        rows.append({
            "experiment": exp, "roi": roi, "metric": metric, "unit": _first_unit(g["unit"]),
            "n": n, "n_cases": int(n_cases[exp]), "mean": mean, "std": std,
            "text": format_mean_std(mean, std, n, int(n_cases[exp]), decimals, sign=metric in _BIAS_METRICS),
            "missing": "; ".join(f"{k}: {c}" for k, c in notes.items()),
            "signed_mean": sm, "signed_std": ss, "signed_text": st,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = ["experiment", "roi", "metric", "unit", "n", "n_cases", "mean", "std", "text", "missing",
                   "signed_mean", "signed_std", "signed_text"]


def _signed(df: pd.DataFrame) -> pd.Series:
    """predicted − reference per row (NaN where a row lacks either: image metrics, scores)."""
    ref = pd.to_numeric(df.get("reference"), errors="coerce") if "reference" in df else np.nan
    pred = pd.to_numeric(df.get("predicted"), errors="coerce") if "predicted" in df else np.nan
    return pd.Series(pred - ref, index=df.index, dtype=float)


def _mean_std_text(v: np.ndarray, n_total: int, decimals: int) -> tuple[float, float, str]:
    """(mean, sample std, 'mean ± std' with an explicit sign) of the finite values; NaN, '' if none."""
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, ""
    mean, std = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan
    return mean, std, format_mean_std(mean, std, int(v.size), n_total, decimals, sign=True)


def _check_experiments(stats: pd.DataFrame, experiments: Sequence[str]) -> None:
    have = list(dict.fromkeys(stats["experiment"]))
    absent = [e for e in experiments if e not in have]
    if absent:
        raise input_error("report table", f"experiments {absent} have no per-case metrics (found {have})",
                          "one metrics/{experiment}/per_case.csv per experiment in the table",
                          "run the evaluate stage for them or remove them from the report's table")


def comparison_table(per_case: pd.DataFrame, experiments: Sequence[str],
                     columns: Sequence[tuple[str, str]] | None = None,
                     labels: Mapping[str, str] | None = None, decimals: int = 3) -> pd.DataFrame:
    """Rows = experiments (in the given order, shown by labels[experiment] if given), columns
    = (roi, metric) pairs (default: the OpenKBP dose and DVH scores where the data have them,
    then MAE, SSIM, PSNR, gamma pass rate, dose score, volume score), cells 'mean ± std'.

    The paper's Table 1 (ablation) and Table 2 (distance representations). A (roi, metric)
    that an experiment lacks entirely shows 'n/a'. The OpenKBP DVH score is the official one,
    pooled over all (case, ROI, metric) cells; its ± is the std of the per-case DVH scores.
    """
    stats = summary(per_case, decimals)
    _check_experiments(stats, experiments)
    if columns is None:
        has_kbp = (stats["metric"] == "openkbp_dose_score").any()
        columns = (OPENKBP_COLUMNS if has_kbp else []) + DEFAULT_COLUMNS
    columns = list(columns)
    labels = dict(labels or {})
    index = pd.Index([labels.get(e, e) for e in experiments], name="Model")
    headers = []
    for roi, metric in columns:
        unit = _first_unit(stats.loc[(stats["roi"] == roi) & (stats["metric"] == metric), "unit"])
        header = metric_label(metric, unit, roi)
        headers.append(header if roi in ("Body", "All") else f"{roi} {header}")
    table = pd.DataFrame("n/a", index=index, columns=headers)
    keyed = stats.set_index(["experiment", "roi", "metric"])
    for exp, label in zip(experiments, index):
        for (roi, metric), header in zip(columns, headers):
            if (exp, roi, metric) not in keyed.index:
                continue
            cell = keyed.loc[(exp, roi, metric)]
            if metric == "openkbp_dvh_score":  # the official score: every (case, ROI, metric) cell pooled
                rows = per_case[per_case["experiment"] == exp].sort_values("case", kind="stable").to_dict("records")
                pooled = openkbp_scores_from_rows(rows)["dvh_score"]
                cell = cell.copy()
                cell["text"] = format_mean_std(pooled, cell["std"], cell["n"], cell["n_cases"], decimals)
            table.loc[label, header] = cell["text"]
    table.attrs["best_along"] = "columns"
    return table


def summary_table(stats: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """summary() for reading: rows (model, ROI, metric with unit), columns cases used, mean ± std,
    the signed mean ± std beside it (DVH metrics) and the reasons for missing values."""
    labels = dict(labels or {})
    index = pd.MultiIndex.from_arrays(
        [[labels.get(e, e) for e in stats["experiment"]], list(stats["roi"]),
         [metric_label(m, u, r) for m, u, r in zip(stats["metric"], stats["unit"], stats["roi"])]],
        names=["Model", "ROI", "Metric"])
    table = pd.DataFrame({"Cases": [f"{n}/{t}" for n, t in zip(stats["n"], stats["n_cases"])],
                          "Mean ± std": list(stats["text"]),
                          "Signed Δ = predicted − reference: mean ± std": list(stats["signed_text"]),
                          "Missing values": list(stats["missing"])}, index=index)
    table.attrs["best_along"] = "none"
    return table


def per_roi_table(per_case: pd.DataFrame, experiments: Sequence[str],
                  labels: Mapping[str, str] | None = None, decimals: int = 3) -> pd.DataFrame:
    """The paper's Table 3: rows (ROI, metric) — Body image metrics first, then each ROI's DVH
    metrics in the order they first appear, each as the signed mean ΔX = predicted − reference
    followed by the mean |ΔX|, case-level scores ('All') last — columns the experiments, cells
    'mean ± std'."""
    stats = summary(per_case, decimals)
    _check_experiments(stats, experiments)
    labels = dict(labels or {})
    sub = stats[stats["experiment"].isin(experiments)]
    pairs = list(dict.fromkeys(zip(sub["roi"], sub["metric"])))
    rank = {"Body": 0, "All": 2}
    rois_in_order = list(dict.fromkeys(r for r, _ in pairs))
    pairs.sort(key=lambda p: (rank.get(p[0], 1), rois_in_order.index(p[0])))  # stable within a ROI
    has_signed = set(zip(sub.loc[sub["signed_text"] != "", "roi"], sub.loc[sub["signed_text"] != "", "metric"]))
    rows = [(r, m, signed) for r, m in pairs for signed in ((True, False) if (r, m) in has_signed else (False,))]
    units = sub.groupby(["roi", "metric"], sort=False)["unit"].agg(_first_unit)
    index = pd.MultiIndex.from_tuples([(r, metric_label(m, units[(r, m)], r, signed)) for r, m, signed in rows],
                                      names=["ROI", "Metric"])
    cols = [labels.get(e, e) for e in experiments]
    table = pd.DataFrame("n/a", index=index, columns=pd.Index(cols, name=None))
    keyed = sub.set_index(["experiment", "roi", "metric"])[["text", "signed_text"]]
    for exp, col in zip(experiments, cols):
        for (roi, metric, signed), row in zip(rows, index):
            if (exp, roi, metric) in keyed.index:
                table.loc[row, col] = keyed.loc[(exp, roi, metric), "signed_text" if signed else "text"] or "n/a"
    table.attrs["best_along"] = "rows"
    return table


# decimals a per-case value is shown with, by unit: 0.01 Gy and 0.1 % are below what a plan
# comparison resolves; SSIM needs three
_UNIT_DECIMALS = {"Gy": 2, "%": 1, "dB": 1, "": 3}


def per_case_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """One experiment's long table for reading: rows the cases, columns each (ROI, metric) with
    its unit — the image metrics and case scores first, as they are, DVH metrics as the signed
    Δ = predicted − reference (the absolute value is in per_case.csv) — rounded by unit.
    OpenKBP's per-ROI cells are left out (the OpenKBP DVH score column summarises them)."""
    require_columns(per_case, PER_CASE_COLUMNS, "per-case metric table")
    df = per_case[~(per_case["metric"].astype(str).str.startswith("openkbp_") & (per_case["roi"] != "All"))].copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["signed"] = _signed(df)
    df["unit"] = df["unit"].fillna("").astype(str)
    keys = list(dict.fromkeys(zip(df["roi"], df["metric"], df["unit"])))
    keys.sort(key=lambda k: {"Body": 0, "All": 1}.get(k[0], 2))  # image metrics, case scores, then ROIs
    has_signed = set(zip(df.loc[df["signed"].notna(), "roi"], df.loc[df["signed"].notna(), "metric"]))
    headers = []
    for roi, metric, unit in keys:
        label = metric_label(metric, unit, roi, signed=(roi, metric) in has_signed)
        headers.append(label if roi in ("Body", "All") else f"{roi} {label}")
    cases = list(dict.fromkeys(df["case"].astype(str)))
    table = pd.DataFrame("n/a", index=pd.Index(cases, name="Case"), columns=headers)
    for r in df.itertuples():
        signed = (r.roi, r.metric) in has_signed
        v = r.signed if signed else r.value
        if not math.isnan(v):
            d = _UNIT_DECIMALS.get(r.unit, 2)
            header = headers[keys.index((r.roi, r.metric, r.unit))]
            sign = "+" if signed or r.metric in _BIAS_METRICS else ""
            table.loc[str(r.case), header] = f"{v:{sign}.{d}f}"
    table.attrs["best_along"] = "none"
    return table


def seed_spread(seeds: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 4: per (experiment, metric) the spread over sampling seeds of the
    mean-over-cases metric.

    Columns: experiment, metric, n_seeds, mean (of the per-seed means), std (ddof=1),
    min, max, range (max - min). NaN values are left out of a seed's mean over cases.
    """
    require_columns(seeds, SEED_COLUMNS, "seed study table (seeds.csv)")
    df = seeds.copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    per_seed = df.groupby(["experiment", "metric", "seed"], sort=False)["value"].mean().dropna()
    rows = []
    for (exp, metric), s in per_seed.groupby(level=["experiment", "metric"], sort=False):
        v = s.to_numpy(dtype=float)
        rows.append({"experiment": exp, "metric": metric, "n_seeds": int(v.size), "mean": float(v.mean()),
                     "std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                     "min": float(v.min()), "max": float(v.max()), "range": float(v.max() - v.min())})
    return pd.DataFrame(rows, columns=["experiment", "metric", "n_seeds", "mean", "std", "min", "max", "range"])


def seed_spread_table(spread: pd.DataFrame, labels: Mapping[str, str] | None = None,
                      decimals: int = 4) -> pd.DataFrame:
    """Table 4 laid out like the paper: rows experiments, columns metrics, cells
    'mean ± std (range r, k seeds)' of the per-seed means over cases."""
    labels = dict(labels or {})
    exps = list(dict.fromkeys(spread["experiment"]))
    metrics = list(dict.fromkeys(spread["metric"]))
    table = pd.DataFrame("n/a", index=pd.Index([labels.get(e, e) for e in exps], name="Model"),
                         columns=[metric_label(m, None, "All") for m in metrics])
    for _, r in spread.iterrows():
        table.loc[labels.get(r["experiment"], r["experiment"]), metric_label(r["metric"], None, "All")] = (
            f"{r['mean']:.{decimals}f} ± {r['std']:.{decimals}f} (range {r['range']:.{decimals}f}, "
            f"{int(r['n_seeds'])} seeds)")
    table.attrs["best_along"] = "none"  # a spread is not a ranking: nothing to bold
    return table
