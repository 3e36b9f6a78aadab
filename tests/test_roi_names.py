"""One alias table, one mapping: DICOM (RTSTRUCT ROI names) and OpenKBP (ROI file names) read
through dosediff.io.roi_names match the same names to the same canonical ROIs."""

from __future__ import annotations

import numpy as np
import pytest
from test_dicom_bad_input import _rename, build_case, source  # noqa: F401 (fixture)
from test_fuzz_ingest import _openkbp_patient

from dosediff.config import DatasetConfig
from dosediff.errors import InputError
from dosediff.io.dicom import read_dicom_case
from dosediff.io.openkbp import read_openkbp_case


def _read(kind: str, tmp_path, source: dict, roi_name: str, **kw):  # noqa: F811
    """The case read from a `kind` source whose one ROI is named `roi_name`."""
    dataset = DatasetConfig(name="t", source=kind, input_dir=str(tmp_path), rois=["GTV_Mass"],
                            aliases={"GTV_Mass": ["GTV_Mass_CT"]}, **kw)
    if kind == "dicom":
        return read_dicom_case(build_case(tmp_path, source, edit_rs=_rename(roi_name)), "c1", dataset)
    folder = tmp_path / "pt_1"
    _openkbp_patient(folder, np.random.default_rng(0))
    (folder / "Larynx.csv").unlink()
    (folder / "PTV70.csv").rename(folder / f"{roi_name}.csv")
    return read_openkbp_case(folder, "c1", dataset)


@pytest.mark.parametrize("roi_name, matched", [("GTV_Mass", True), ("gtv  mass_ct", True), ("GTV MASS", True),
                                               ("Tumour blob", False)])
@pytest.mark.parametrize("kind", ["dicom", "openkbp"])
def test_same_alias_table_same_mapping(tmp_path, source, kind, roi_name, matched) -> None:  # noqa: F811
    assert list(_read(kind, tmp_path, source, roi_name).masks) == (["GTV_Mass"] if matched else [])
    assert _read(kind, tmp_path / "ignored", source, roi_name, ignore_rois=[roi_name.lower()]).masks == {}


@pytest.mark.parametrize("kind", ["dicom", "openkbp"])
def test_required_roi_enforced_for_both_sources(tmp_path, source, kind) -> None:  # noqa: F811
    with pytest.raises(InputError, match=r"required ROIs \['GTV_Mass'\].*Tumour blob"):
        _read(kind, tmp_path, source, "Tumour blob", required_rois=["GTV_Mass"])
