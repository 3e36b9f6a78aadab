"""The table of bench_vs_authors.py (standard library only: the parent process stays small)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess

TARGETS = {"train": 0.7, "predict": 0.3, "preprocess": 0.2, "disk": 0.15}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict:
    """CPU model and the vector flags that decide torch's kernels, cores, load."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        text = ""
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    return {"cpu": info.get("Model name", platform.processor()).strip(), "cores": os.cpu_count(),
            "flags": [f for f in FLAGS if f in flags], "loadavg": [round(v, 2) for v in os.getloadavg()]}


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _per_round(results: dict, key: str, field: str = "s", scale: float = 1.0) -> list[float]:
    """One number per round: the median of that child's timings (or the field itself)."""
    out = []
    for r in results.get(key, []):
        v = r[field]
        out.append((_med(v) if isinstance(v, list) else v) * scale)
    return out


def _row(name: str, a: list[float], b: list[float], unit: str, peak_a: str, peak_b: str,
         target: float | None) -> str:
    if not b:
        return ""
    ratio = _med([y / x for x, y in zip(a, b)]) if a else None
    sa = f"{_med(a):.2f} {unit}" if a else "-"
    rs = f"{ratio:.2f}x" if ratio is not None else "-"
    verdict = "" if target is None or ratio is None else ("ok" if ratio <= target else "MISSED")
    tg = f"<= {target}x {verdict}" if target is not None else ""
    return f"| {name} | {sa} | {_med(b):.2f} {unit} | {rs} | {tg} | {peak_a} / {peak_b} |"


def _peak(results: dict, key: str) -> str:
    rs = results.get(key, [])
    return f"{max(r['peak_mb'] for r in rs) / 1024:.2f} GB" if rs else "-"


def table(results: dict, info: dict, args) -> str:
    head = [f"machine: {info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags'])}, "
            f"load {info['loadavg']} at the end; {args.repeats} rounds interleaved, medians; "
            f"{args.size}x{args.size}, batch 8, width 32, mult 1,1,2,3,4, 20 condition channels, 8 DDIM steps",
            "", "| | authors' code | dosediff | ratio | target | peak memory (authors / dosediff) |",
            "|---|---|---|---|---|---|"]
    rows = [_row("training step (fp32)", _per_round(results, "train/authors"), _per_round(results, "train/ours"),
                 "s", _peak(results, "train/authors"), _peak(results, "train/ours"), TARGETS["train"]),
            _row("training step, dosediff in bf16 autocast (train.bf16: true)", _per_round(results, "train/authors"),
                 _per_round(results, "train/ours-bf16"), "s", _peak(results, "train/authors"),
                 _peak(results, "train/ours-bf16"), None)]
    da = _per_round(results, "ddim/authors")
    for side, label in (("ours", "paper design, fp32"), ("ours-cached", "cached CT/condition encoders, fp32"),
                        ("ours-bf16", "paper design, bf16 autocast"),
                        ("ours-ff64", "paper design, fusion_dim 64, fp32")):
        rows.append(_row(f"8-step DDIM per slice, {label}", da, _per_round(results, f"ddim/{side}"), "s",
                         _peak(results, "ddim/authors"), _peak(results, f"ddim/{side}"), None))
    pred = results.get("predict/ours", [])
    if pred:
        p = pred[0]
        rows.append(_row(f"predicted volume (authors: DDIM/slice x 128; dosediff: `dosediff predict`, "
                         f"{p['slices']}/{p['of']} slices, {p['precision']})", [v * 128 for v in da],
                         _per_round(results, "predict/ours"), "s", "-", _peak(results, "predict/ours"),
                         TARGETS["predict"]))
    pa = results.get("preprocess/authors", [])
    for side, label, target in (("ours", "PSDM (as theirs)", True), ("ours-3maps", "PSDM+MSDM+TSBDM", False)):
        po = results.get(f"preprocess/{side}", [])
        rows.append(_row(f"preprocessing per OpenKBP patient, one core, {label}",
                         _per_round(results, "preprocess/authors"), _per_round(results, f"preprocess/{side}"), "s",
                         _peak(results, "preprocess/authors"), _peak(results, f"preprocess/{side}"),
                         TARGETS["preprocess"] if target else None))
        for field, what, tgt in (("disk_mb", "all files written", TARGETS["disk"]),
                                 ("model_input_mb", "model input (NPY / HDF5)", None)):
            rows.append(_row(f"disk per patient, {what}, {label}", [r[field] for r in pa],
                             [r[field] for r in po], "MB", "-", "-", tgt if target else None))
    notes = []
    for key in ("train/authors", "train/ours"):
        if results.get(key):
            r = results[key][0]
            notes.append(f"{key.split('/')[1]}: {r['params']:,} parameters, fusionFormer {r['fusion_params']:,}")
    return "\n".join(head + [r for r in rows if r] + ([""] + notes if notes else []))
