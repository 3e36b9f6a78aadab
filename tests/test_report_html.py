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


def _results(report_html: str) -> dict:
    match = re.search(r"var results = (\{.*?\});\s*</script>", report_html, re.DOTALL)
    assert match, "no results table in report.html"
    return json.loads(match.group(1))


@pytest.mark.slow
def test_report_embeds_tables_and_labels_figures(tmp_path: Path):
    config = _tiny_config(tmp_path)
    base = [*SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(config)]
    out = _run([*base, "--cores", "2"], REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    out = _run([*base, "--report", str(tmp_path / "report.html")], REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    results = _results((tmp_path / "report.html").read_text())

    tables = {k: v for k, v in results.items() if k.endswith("/report/comparison.html")}
    assert len(tables) == 1, sorted(results)
    entry = next(iter(tables.values()))
    uri = entry["data_uri"]
    assert uri.startswith("data:text/html"), uri[:40]  # text/html is shown inline in an iframe
    page = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert "<table>" in page and "<caption>" in page and "Gamma pass rate (%)" in page
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
