"""One synthetic patient in memory: anatomy, ROI names as an institution would write them, dose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dosediff.config import DatasetConfig, PhantomConfig
from dosediff.errors import input_error
from dosediff.phantom.anatomy import DECIMALS, build_anatomy
from dosediff.phantom.dose import gantry_angles, plan_dose
from dosediff.volume import Geometry

ROI_NAMES = ["PTV", "SpinalCord", "Esophagus", "Heart", "LungL", "LungR"]  # canonical, channel order
PRESCRIPTION_GY = 60.0
TARGETS = {"PTV": PRESCRIPTION_GY}
LR_PAIRS = [["LungL", "LungR"]]

# Names the RTSTRUCTs use, one drawn per patient, as different planning systems spell them.
WRITTEN_NAMES: dict[str, list[str]] = {
    "PTV": ["PTV"],
    "SpinalCord": ["SpinalCord", "Spinal Cord", "SPINAL_CORD", "Cord"],
    "Esophagus": ["Esophagus", "ESOPHAGUS", "Oesophagus"],
    "Heart": ["Heart", "HEART"],
    "LungL": ["LungL", "Lung_L", "Lung L", "Lt Lung", "Left Lung"],
    "LungR": ["LungR", "Lung_R", "Lung R", "Rt Lung", "Right Lung"],
}
# canonical -> the other names the phantom writes (DatasetConfig.aliases semantics)
PHANTOM_ALIASES: dict[str, list[str]] = {
    k: [n for n in v if n != k] for k, v in WRITTEN_NAMES.items() if any(n != k for n in v)
}
BODY_ROI_NAME = "BODY"  # the external contour every real structure set has; not a model input
PHANTOM_IGNORE_ROIS = [BODY_ROI_NAME]

# Patient-identifying header fields carry these, so tests can prove none reaches an output.
PATIENT_NAME = "SENTINEL^NAME"
PATIENT_ID_PREFIX = "SENTINEL-ID-"
BIRTH_DATE = "19010101"
STUDY_DATE = "19020202"
INSTITUTION = "SENTINEL-INSTITUTION"
OPERATOR = "SENTINEL^OPERATOR"
PHYSICIAN = "SENTINEL^PHYSICIAN"
STATION = "SENTINEL-STATION"
ACCESSION = "SENTINEL-ACC"  # SH: at most 16 characters
SENTINELS: list[str] = ["SENTINEL", PATIENT_NAME, PATIENT_ID_PREFIX, BIRTH_DATE, STUDY_DATE, INSTITUTION,
                        OPERATOR, PHYSICIAN, STATION, ACCESSION]


@dataclass
class PhantomPatient:
    """A synthetic patient on its CT grid (arrays (z, y, x); contours (N, 3) x, y, z mm)."""

    case_id: str
    geometry: Geometry
    ct: np.ndarray  # int16 HU
    dose: np.ndarray  # float32 Gy, 0 outside the body
    masks: dict[str, np.ndarray]  # canonical name -> uint8
    contours: dict[str, list[np.ndarray]]  # canonical name -> closed planar polygons
    prescription_gy: float
    body: np.ndarray  # uint8, the rasterised BODY contours
    body_contours: list[np.ndarray]
    roi_names: dict[str, str]  # canonical -> name written in the RTSTRUCT
    gantry_deg: list[float]
    isocenter_mm: tuple[float, float, float]
    seed: int
    index: int
    ptv_site: str = ""  # LungL, LungR or mediastinum

    def patient_id(self) -> str:
        return f"{PATIENT_ID_PREFIX}{self.index:04d}"


def check_config(cfg: PhantomConfig) -> None:
    """Values PhantomConfig does not check itself; each bad one is an input error."""
    shape, spacing = list(cfg.shape), list(cfg.spacing)
    if len(shape) != 3 or any(int(v) != v or v < 8 for v in shape):
        raise input_error("setting phantom.shape", f"value {shape}", "[slices, rows, columns], each an integer >= 8",
                          "set phantom.shape, e.g. [40, 96, 96]")
    if len(spacing) != 3 or any(not 0.3 <= v <= 20 for v in spacing):
        raise input_error("setting phantom.spacing", f"value {spacing}", "three spacings in mm between 0.3 and 20",
                          "set phantom.spacing, e.g. [5.0, 3.5, 3.5]")
    fov = min(shape[1] * spacing[1], shape[2] * spacing[2])
    if fov < 150 or shape[0] * spacing[0] < 60:
        raise input_error("settings phantom.shape and phantom.spacing",
                          f"field of view {shape[2] * spacing[2]:.0f} x {shape[1] * spacing[1]:.0f} mm in-plane, "
                          f"{shape[0] * spacing[0]:.0f} mm long",
                          "at least 150 mm in-plane and 60 mm along the patient (a thorax must fit)",
                          "increase the shape or the spacing")
    if not 1 <= cfg.n_beams <= 72:
        raise input_error("setting phantom.n_beams", f"value {cfg.n_beams}", "1 to 72 beams",
                          "set phantom.n_beams, e.g. 7")
    if cfg.seed < 0:
        raise input_error("setting phantom.seed", f"value {cfg.seed}", "a non-negative integer",
                          "set phantom.seed, e.g. 0")


def phantom_geometry(cfg: PhantomConfig, rng: np.random.Generator) -> Geometry:
    """CT grid: x, y centred on 0, z at a table position that varies between patients."""
    nz, ny, nx = (int(v) for v in cfg.shape)
    dz, dy, dx = (float(v) for v in cfg.spacing)
    oz = round(-300.0 + 2.5 * float(rng.integers(0, 40)), DECIMALS)
    origin = (round(-(nx - 1) * dx / 2, DECIMALS), round(-(ny - 1) * dy / 2, DECIMALS), oz)
    return Geometry(shape=(nz, ny, nx), spacing=(dz, dy, dx), origin=origin)


def make_phantom(index: int, cfg: PhantomConfig) -> PhantomPatient:
    """Synthetic thorax patient number `index`, deterministic for (cfg.seed, index)."""
    check_config(cfg)
    if index < 0:
        raise input_error("phantom case index", f"value {index}", "a non-negative integer",
                          "number the phantom cases 1..N")
    rng = np.random.default_rng([cfg.seed, index])
    geometry = phantom_geometry(cfg, rng)
    anatomy = build_anatomy(rng, geometry)
    roi_names = {k: v[int(rng.integers(len(v)))] for k, v in WRITTEN_NAMES.items()}

    ptv = anatomy.masks["PTV"]
    zyx = np.argwhere(ptv).mean(axis=0)  # centroid (z, y, x) index
    iso = np.round(geometry.index_to_world(zyx), 1)  # (x, y, z) mm
    angles = gantry_angles(cfg.n_beams)
    dose = plan_dose(anatomy.ct, anatomy.body, ptv, geometry, angles, (float(iso[0]), float(iso[1])),
                     PRESCRIPTION_GY)
    return PhantomPatient(case_id=f"phantom_{index:03d}", geometry=geometry, ct=anatomy.ct, dose=dose,
                          masks=anatomy.masks, contours=anatomy.contours, prescription_gy=PRESCRIPTION_GY,
                          body=anatomy.body, body_contours=anatomy.body_contours, roi_names=roi_names,
                          gantry_deg=angles, isocenter_mm=(float(iso[0]), float(iso[1]), float(iso[2])),
                          seed=int(cfg.seed), index=int(index), ptv_site=anatomy.ptv_site)


def phantom_dataset_config(**overrides) -> DatasetConfig:
    """The DatasetConfig that reads the phantom's DICOM folders (ROIs, aliases, targets)."""
    settings = dict(name="phantom", source="dicom", rois=list(ROI_NAMES), targets=dict(TARGETS),
                    required_rois=["PTV"], aliases={k: list(v) for k, v in PHANTOM_ALIASES.items()},
                    ignore_rois=list(PHANTOM_IGNORE_ROIS), lr_pairs=[list(p) for p in LR_PAIRS],
                    prescription_gy=PRESCRIPTION_GY)
    settings.update(overrides)
    return DatasetConfig(**settings)
