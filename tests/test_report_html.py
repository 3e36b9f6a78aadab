"""The Snakemake HTML report of a tiny run: the comparison table is embedded as HTML (shown
inline, not only offered as a download) and every figure entry carries labels.

Slow (a few minutes on 2 shared cores: a tiny phantom, 4 training steps): `pytest -m slow`."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml

from test_workflow import REPO, SNAKEMAKE, _run


def _tiny_config(tmp: Path) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"]["name"] = "tiny"
    config["phantom"].update(n_cases=5, shape=[12, 40, 40], spacing=[5.0, 5.0, 5.0], n_beams=5)
    config["preprocess"]["size"] = [32, 32]
    for exp in config["experiments"].values():
        exp["train"].update(steps=4, checkpoint_every=4, validate_every=4, log_every=2, val_max_slices=4)
        exp.setdefault("sample", {}).update(steps=2, n_samples=1, batch_size=16)
    config["report"]["steps_study"] = {"experiment": "dosediff", "steps": [1, 2], "seeds": [0]}
    config["report"]["seed_study"] = {"experiment": "dosediff", "steps": [2], "seeds": [0, 1]}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _results(report_html: str, name: str = "results") -> dict:
    match = re.search(rf"var {name} = (\{{.*?\}});\s*</script>", report_html, re.DOTALL)
    assert match, f"no {name} table in report.html"
    return json.loads(match.group(1))


def _page(entry: dict) -> str:
    """The HTML page of an entry that the report shows inline (text/html data URI)."""
    uri = entry["data_uri"]
    assert uri.startswith("data:text/html"), uri[:40]  # text/html is shown inline in an iframe
    return base64.b64decode(uri.split(",", 1)[1]).decode()


@pytest.mark.slow
def test_report_embeds_tables_and_labels_figures(tmp_path: Path):
    config = _tiny_config(tmp_path)
    base = [*SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(config)]
    out = _run([*base, "--cores", "2"], REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    out = _run([*base, "--report", str(tmp_path / "report.html")], REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    report_html = (tmp_path / "report.html").read_text()
    results, categories = _results(report_html), _results(report_html, "categories")

    tables = {k: v for k, v in results.items() if k.endswith("/report/comparison.html")}
    assert len(tables) == 1, sorted(results)
    entry = next(iter(tables.values()))
    page = _page(entry)
    assert "<table>" in page and "<caption>" in page and "Gamma pass rate (%)" in page
    assert "<th>Mean ΔD (Gy)</th>" in page and "under-doses" in page  # signed errors, their meaning
    assert "n = 1 test cases" in page and "3%/3mm global, 10% cut-off" in page
    assert entry["labels"] == {"table": "01 comparison"}
    for name in ("per_roi", "summary", "steps", "seeds"):
        assert any(k.endswith(f"/report/{name}.html") for k in results), name
    assert not any(k.endswith((".md", ".csv")) and "/report/" in k for k in results)

    figures = {k: v for k, v in results.items() if k.endswith(".png")}
    assert figures, "no figure in the report"
    for path, fig in figures.items():
        assert fig.get("labels"), f"figure {path} has no labels"
    kinds = {(f["labels"].get("figure"), f["labels"].get("model")) for f in figures.values()}
    assert ("DVH", "all models") in kinds and ("dose slices", "DoseDiff (PSDM + MS + FF)") in kinds

    # the per-case metrics of each model as a table on screen (the CSV stays a download)
    per_case = {k: v for k, v in results.items() if k.endswith("/per_case.html")}
    n_models = len(yaml.safe_load(config.read_text())["experiments"]) + 1  # and the mean-dose baseline
    assert len(per_case) == n_models, sorted(results)
    for entry in per_case.values():
        page = _page(entry)
        assert "<th class=\"key\">Case</th>" in page and "n = 1 cases" in page
        assert entry["labels"]["table"] == "per case"
    # study figures under Figures, tables under Tables
    for name in ("steps.png", "seeds.png"):
        cat = [c for c, subs in categories.items() for paths in subs.values() for p in paths if p.endswith(name)]
        assert cat == ["Figures"], (name, cat)
    assert all(p.endswith(".html") for p in categories["Tables"]["Results"])
