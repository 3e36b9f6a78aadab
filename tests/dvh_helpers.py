"""Test-only DVH readings: the planning system's DVHs stored in an RTDOSE file (C.8.8.4, RT DVH
Module) and the mean dose and D_V read off a cumulative curve, to check dosediff's DVHs against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from dosediff.errors import input_error, warn
from dosediff.metrics.dvh import DVH


def curve_mean_gy(curve: DVH) -> float:
    """Mean dose from the curve: each bin's volume at its centre dose (last bin as wide as the one before)."""
    diff = curve.volume_cc - np.append(curve.volume_cc[1:], 0.0)
    widths = np.diff(curve.dose_gy, append=2 * curve.dose_gy[-1] - curve.dose_gy[-2]) \
        if curve.dose_gy.size > 1 else np.zeros(1)
    return float(np.sum(diff * (curve.dose_gy + widths / 2)) / curve.total_cc)


def curve_dose_at_percent(curve: DVH, v_percent: float) -> float:
    """D_V read off the curve, linear between bin edges."""
    vp = curve.volume_percent
    # np.interp needs increasing x: walk the (decreasing) curve backwards.
    return float(np.interp(v_percent, vp[::-1], curve.dose_gy[::-1]))


@dataclass(frozen=True)
class EmbeddedDVH:
    """A DVH stored in an RTDOSE file's DVHSequence, doses converted to Gy."""

    roi_number: int
    roi_name: str | None
    curve: DVH
    min_gy: float | None
    mean_gy: float | None
    max_gy: float | None


def read_embedded_dvhs(rtdose_path: str | Path, rtstruct_path: str | Path | None = None,
                       stats_percent_of_gy: float | None = None) -> dict[int, EmbeddedDVH]:
    """Planning-system DVHs stored in an RTDOSE file, by ReferencedROINumber.

    Cumulative DVHs only. DVHData holds (bin width, volume) pairs, volume_i being the volume
    receiving at least the i-th bin's lower edge; bin widths are multiplied by DVHDoseScaling.
    With rtstruct_path, ROI names come from its StructureSetROISequence. DVHMinimumDose,
    DVHMeanDose and DVHMaximumDose are returned in Gy as stored, or, with stats_percent_of_gy,
    read as % of that dose: some systems write them relative to the prescription while
    labelling them GY (the dicompyler example's Eclipse export: DVHData in Gy, statistics in %
    of 14 Gy, e.g. a maximum of 104.9 on a 14.7 Gy grid). A statistic above the dose grid's
    maximum, or a curve reaching beyond it, triggers a warning.
    """
    ds = pydicom.dcmread(str(rtdose_path))
    if "DVHSequence" not in ds:
        raise input_error(rtdose_path, "no DVHSequence", "an RTDOSE with the planning system's DVHs",
                          "export the dose with DVHs from the planning system, or compute DVHs with cumulative_dvh")
    names: dict[int, str] = {}
    if rtstruct_path is not None:
        ss = pydicom.dcmread(str(rtstruct_path))
        names = {int(r.ROINumber): str(r.ROIName) for r in ss.get("StructureSetROISequence", [])}
    grid_max = float(ds.pixel_array.max()) * float(ds.get("DoseGridScaling", 1.0))
    factor = stats_percent_of_gy / 100.0 if stats_percent_of_gy else 1.0
    out: dict[int, EmbeddedDVH] = {}
    for item in ds.DVHSequence:
        if str(item.get("DVHType", "")).upper() != "CUMULATIVE":
            continue
        if str(item.get("DVHVolumeUnits", "CM3")).upper() != "CM3":
            warn(rtdose_path, f"DVH volume units {item.get('DVHVolumeUnits')}", "volumes are not in cm^3")
        number = int(item.DVHReferencedROISequence[0].ReferencedROINumber)
        data = np.asarray(item.DVHData, dtype=float)
        widths, volumes = data[0::2] * float(item.get("DVHDoseScaling", 1.0)), data[1::2]
        edges = np.concatenate([[0.0], np.cumsum(widths)[:-1]])

        def stat(key: str) -> float | None:
            return float(item.get(key)) * factor if item.get(key) is not None else None

        emb = EmbeddedDVH(number, names.get(number), DVH(edges, volumes), stat("DVHMinimumDose"),
                          stat("DVHMeanDose"), stat("DVHMaximumDose"))
        top = float(edges[volumes > 0][-1] + widths[volumes > 0][-1]) if np.any(volumes > 0) else 0.0
        if top > 1.05 * grid_max + 0.01:
            warn(rtdose_path, f"DVH of ROI {number} reaches {top:.4g} Gy but the dose grid's maximum is "
                 f"{grid_max:.4g} Gy", "its DVHData doses may not be in Gy")
        if emb.max_gy is not None and emb.max_gy > 1.05 * grid_max + 0.01:
            warn(rtdose_path, f"DVHMaximumDose of ROI {number} is {emb.max_gy:.4g} but the dose grid's maximum is "
                 f"{grid_max:.4g} Gy", "the statistics are probably % of the prescription: pass stats_percent_of_gy")
        out[number] = emb
    return out
