"""Gamma pass rate of a predicted dose against the reference, through pymedphys.gamma.

Defaults: global 3 %/3 mm, normalised to the reference's maximum dose, 10 % low-dose
cut-off. Evaluated points: reference voxels with dose >= cut-off x normalisation (pymedphys'
own >= convention), inside the body mask when one is given, optionally a seeded random
subset of them. Pass rate = % of evaluated points with gamma <= 1; an evaluated point whose
gamma is NaN (only possible with NaN doses, which are rejected up front) counts as failing
and is reported in `nan_points`.

Speed and accuracy (measured on OpenKBP pt_201 and pt_210, 128^3, 56k-62k points above 10 %,
predictions with OpenKBP dose errors of 1.4 and 2.4 Gy, one core; benchmarks/bench_metrics.py):
pymedphys searches shells of growing distance around each reference point, interpolating
the evaluation dose (interp_algo="scipy", trilinear) every distance_mm / interp_fraction mm.
Failing points cost the most: they search every shell. Pass rates (time), pt_201 | pt_210:

    interp_fraction 10 (0.3 mm steps)        81.54 % (36 s)   79.69 % (54 s)
    interp_fraction 5  (0.6 mm steps)        81.31 % (3.9 s)  79.31 % (2.5 s)
    interp_fraction 3  (1 mm steps)          80.59 % (1.3 s)  78.33 % (0.9 s)
    interp_fraction 10, 10k random points    80.97 % (8.9 s)  79.34 % (4.5 s)

Default: interp_fraction 5, i.e. a 0.6 mm search step on grids of 2.5-5.4 mm voxels, 0.2-0.4
percentage points below the 0.3 mm search (a coarser search can only miss matches) at a
tenth of the time; every point is evaluated up to max_points = 100 000, above which a
seeded random subset of 100 000 is (standard error of the pass rate <= 0.16 percentage
points), so large grids stay bounded in time. The search stops once a point passes
(skip_once_passed) and at max_gamma = 1.1 (3.3 mm): the same pass/fail decisions as an
exhaustive search (checked in the tests and the benchmark). The gamma *values* are then upper
bounds for passing points and clipped at max_gamma for failing ones; set skip_once_passed
False and a larger max_gamma for a true gamma distribution. max_gamma must exceed 1:
pymedphys clips gamma to max_gamma, so max_gamma <= 1 would turn failing points into passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dosediff.errors import input_error


@dataclass(frozen=True)
class GammaConfig:
    """Gamma index settings (see module docstring)."""

    enabled: bool = True
    dose_percent: float = 3.0
    distance_mm: float = 3.0
    cutoff_percent: float = 10.0  # of the normalisation dose, on the reference
    local: bool = False
    normalisation_gy: float | None = None  # None: the reference's maximum dose
    interp_fraction: int = 5  # search step = distance_mm / interp_fraction
    max_gamma: float = 1.1
    skip_once_passed: bool = True
    max_points: int | None = 100_000  # above this, a seeded random subset of this many points
    seed: int = 0
    restrict_to_body: bool = True

    def __post_init__(self) -> None:
        def bad(key: str, value: object, expected: str, fix: str) -> None:
            raise input_error(f"setting evaluate.gamma.{key}", f"value {value!r}", expected, fix)

        if not self.dose_percent > 0:
            bad("dose_percent", self.dose_percent, "a positive percentage", "set e.g. 3")
        if not self.distance_mm > 0:
            bad("distance_mm", self.distance_mm, "a positive distance in mm", "set e.g. 3")
        if not 0 <= self.cutoff_percent < 100:
            bad("cutoff_percent", self.cutoff_percent, "a percentage in [0, 100)", "set e.g. 10")
        if self.interp_fraction < 1:
            bad("interp_fraction", self.interp_fraction, "an integer >= 1", "set e.g. 10")
        if not self.max_gamma > 1:
            bad("max_gamma", self.max_gamma, "a value above 1 (pymedphys clips gamma to it)", "set e.g. 1.1 or 2")
        if self.max_points is not None and self.max_points < 1:
            bad("max_points", self.max_points, "a positive count or null", "set null to evaluate every point")
        if self.normalisation_gy is not None and not self.normalisation_gy > 0:
            bad("normalisation_gy", self.normalisation_gy, "a positive dose in Gy or null",
                "set null to normalise to the reference maximum")


@dataclass(frozen=True)
class GammaResult:
    """Pass rate (%) and what it was computed over; `gamma` holds NaN where not evaluated."""

    pass_rate: float
    evaluated_points: int
    nan_points: int
    normalisation_gy: float
    cutoff_gy: float
    gamma: np.ndarray


def gamma_pass_rate(reference: np.ndarray, predicted: np.ndarray, spacing_mm: Sequence[float],
                    body: np.ndarray | None = None, settings: GammaConfig | None = None,
                    case: str | None = None) -> GammaResult:
    """Gamma index of `predicted` (evaluation) against `reference` on the same (z, y, x) grid."""
    import pymedphys  # heavy import; only the gamma needs it

    cfg = settings or GammaConfig()
    ref = np.asarray(reference, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    if pred.shape != ref.shape:
        raise input_error("predicted dose", f"shape {pred.shape} differs from the reference dose's {ref.shape}",
                          "the reference dose's grid", "resample the prediction onto the reference grid", case=case)
    for what, arr in (("reference dose", ref), ("predicted dose", pred)):
        if not np.all(np.isfinite(arr)):
            raise input_error(what, "NaN or infinite values", "finite doses in Gy",
                              "fill missing dose values (0 outside the dose grid) before evaluating", case=case)
    norm = float(cfg.normalisation_gy) if cfg.normalisation_gy is not None else float(ref.max())
    cutoff = cfg.cutoff_percent / 100.0 * norm
    gamma = np.full(ref.shape, np.nan)
    if not norm > 0:
        return GammaResult(math.nan, 0, 0, norm, cutoff, gamma)

    select = _evaluated_points(ref, cutoff, body, cfg, case)
    n_eval = int(np.count_nonzero(select))
    if n_eval == 0:
        return GammaResult(math.nan, 0, 0, norm, cutoff, gamma)

    # pymedphys evaluates the reference points with dose >= cut-off; it reads the reference only
    # at those points, so marking the others -1 Gy chooses the evaluated set exactly. Crop the
    # reference grid to the selection's bounding box (the evaluation grid stays whole).
    idx = np.nonzero(select)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    ref_marked = np.where(select, ref, -1.0)[box]
    axes_eval = tuple(np.arange(n) * float(s) for n, s in zip(ref.shape, spacing_mm))
    axes_ref = tuple(a[b] for a, b in zip(axes_eval, box))
    g = pymedphys.gamma(axes_ref, ref_marked, axes_eval, pred, dose_percent_threshold=cfg.dose_percent,
                        distance_mm_threshold=cfg.distance_mm, lower_percent_dose_cutoff=cfg.cutoff_percent,
                        interp_fraction=cfg.interp_fraction, max_gamma=cfg.max_gamma, local_gamma=cfg.local,
                        global_normalisation=norm, skip_once_passed=cfg.skip_once_passed, interp_algo="scipy")
    gamma[box] = np.where(select[box], g, np.nan)
    values = gamma[select]
    nan_points = int(np.count_nonzero(np.isnan(values)))
    passed = int(np.count_nonzero(values <= 1.0))  # NaN compares False: counted as failing
    return GammaResult(100.0 * passed / n_eval, n_eval, nan_points, norm, cutoff, gamma)


def _evaluated_points(ref: np.ndarray, cutoff: float, body: np.ndarray | None, cfg: GammaConfig,
                      case: str | None) -> np.ndarray:
    """Reference points evaluated: dose >= cutoff, inside the body if so configured, at most
    cfg.max_points of them drawn with cfg.seed."""
    select = ref >= cutoff
    if body is not None and cfg.restrict_to_body:
        if tuple(np.shape(body)) != ref.shape:
            raise input_error("body mask", f"shape {np.shape(body)} differs from the dose's {ref.shape}",
                              "the dose grid", "use the body mask of the same case", case=case)
        select &= np.asarray(body).astype(bool)
    if cfg.max_points is not None and np.count_nonzero(select) > cfg.max_points:
        flat = np.flatnonzero(select)
        keep = np.random.default_rng(cfg.seed).choice(flat, size=cfg.max_points, replace=False)
        select = np.zeros(ref.size, dtype=bool)
        select[keep] = True
        select = select.reshape(ref.shape)
    return select
