"""Analytic thorax anatomy for the synthetic patients.

Every contoured structure is a star-shaped region: rays cast from the structure's centre
stop at its own (perturbed) ellipse, at the wall of a container ellipse, or just before an
obstacle ellipse (e.g. a lung stops short of the heart). The polygon through the ray ends is
the contour, and the mask is exactly its rasterisation (voxel centre inside the polygon),
so contour and mask agree by construction. Unit: mm in patient coordinates (LPS: +x
patient left, +y posterior, +z superior).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.path import Path as MplPath
from scipy import ndimage

from dosediff.volume import Geometry

N_VERTICES = 64  # per contour: chords deviate < 0.15 mm from the ellipse at 100 mm radius
DECIMALS = 2  # contour vertices are written with 2 decimals; masks use the rounded vertices
REFERENCE_FOV_MM = 340.0  # in-plane field of view the adult sizes below are made for


@dataclass(frozen=True)
class Ellipse:
    """Axis-aligned ellipse centre (cx, cy), semi-axes (a along x, b along y), mm."""

    cx: float
    cy: float
    a: float
    b: float

    def grown(self, mm: float) -> Ellipse:
        return Ellipse(self.cx, self.cy, self.a + mm, self.b + mm)

    def hits(self, px: float, py: float, vx: np.ndarray, vy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameters (near, far) where rays p + t v meet the ellipse; nan where they miss."""
        qa = (vx / self.a) ** 2 + (vy / self.b) ** 2
        qb = 2 * ((px - self.cx) * vx / self.a**2 + (py - self.cy) * vy / self.b**2)
        qc = ((px - self.cx) / self.a) ** 2 + ((py - self.cy) / self.b) ** 2 - 1
        disc = qb**2 - 4 * qa * qc
        root = np.sqrt(np.where(disc > 0, disc, np.nan))
        return (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return ((x - self.cx) / self.a) ** 2 + ((y - self.cy) / self.b) ** 2 <= 1


def star_polygon(cx: float, cy: float, a: float, b: float, harmonics: tuple[tuple[float, float], ...] = (),
                 containers: tuple[Ellipse, ...] = (), obstacles: tuple[Ellipse, ...] = (),
                 y_max: float | None = None, n: int = N_VERTICES) -> np.ndarray:
    """(n, 2) polygon (x, y) mm: own ellipse (a, b) with radial harmonics
    ((amplitude, phase) for k = 2, 3, ...), cut by containers (stay inside), obstacles
    (stop before) and a posterior plane y <= y_max (a flat back on the couch)."""
    phi = 2 * np.pi * np.arange(n) / n
    vx, vy = np.cos(phi), np.sin(phi)
    r = 1 / np.sqrt((vx / a) ** 2 + (vy / b) ** 2)  # (n,) own ellipse radius
    for k, (amp, phase) in enumerate(harmonics, start=2):
        r = r * (1 + amp * np.cos(k * phi + phase))
    for c in containers:
        _, far = c.hits(cx, cy, vx, vy)
        r = np.fmin(r, np.where(far > 0, far, 0.5))
    for o in obstacles:
        near, _ = o.hits(cx, cy, vx, vy)
        r = np.where(near > 0, np.fmin(r, near), r)
    if y_max is not None:
        with np.errstate(divide="ignore"):
            to_plane = np.where(vy > 0, (y_max - cy) / vy, np.inf)
        r = np.fmin(r, to_plane)
    r = np.maximum(r, 0.5)
    return np.round(np.stack([cx + r * vx, cy + r * vy], axis=1), DECIMALS)


def polygon_mask(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray, radius: float = 0.0) -> np.ndarray:
    """(ny, nx) bool: voxel centres (xs columns, ys rows, mm) inside the polygon (x, y).
    A small `radius` grows or shrinks the polygon (which one depends on its orientation)."""
    out = np.zeros((len(ys), len(xs)), dtype=bool)
    i0, i1 = np.searchsorted(xs, [poly[:, 0].min() - 1, poly[:, 0].max() + 1])
    j0, j1 = np.searchsorted(ys, [poly[:, 1].min() - 1, poly[:, 1].max() + 1])
    if i1 <= i0 or j1 <= j0:
        return out
    gx, gy = np.meshgrid(xs[i0:i1], ys[j0:j1])
    inside = MplPath(poly).contains_points(np.column_stack([gx.ravel(), gy.ravel()]), radius=radius)
    out[j0:j1, i0:i1] = inside.reshape(gy.shape)
    return out


def settled_polygon(poly: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(polygon, mask): the polygon shifted by a few hundredths of a mm if needed so that no
    voxel centre lies on its outline; then every rasteriser agrees on the mask."""
    for attempt in range(20):
        shifted = np.round(poly + [0.01 * attempt, 0.01 * (attempt // 2)], DECIMALS)
        if np.array_equal(polygon_mask(shifted, xs, ys, 1e-4), polygon_mask(shifted, xs, ys, -1e-4)):
            return shifted, polygon_mask(shifted, xs, ys)
    raise RuntimeError("could not move a phantom contour off the voxel centres")  # unreachable in practice


@dataclass
class Anatomy:
    """CT (HU, int16), body mask, ROI masks (uint8) and contours ((N, 3) x, y, z mm) per slice."""

    ct: np.ndarray
    body: np.ndarray
    masks: dict[str, np.ndarray]
    contours: dict[str, list[np.ndarray]]
    body_contours: list[np.ndarray]
    ptv_centre_mm: tuple[float, float, float]
    ptv_site: str
    params: dict = field(default_factory=dict)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_params(rng: np.random.Generator, geometry: Geometry) -> dict:
    """Per-patient sizes and positions (mm), scaled down when the field of view is small."""
    nz, ny, nx = geometry.shape
    dz, dy, dx = geometry.spacing
    f = min(1.0, min(nx * dx, ny * dy) / REFERENCE_FOV_MM)
    p: dict = {"f": f}
    p["cx"], p["cy"] = _u(rng, -5, 5) * f, _u(rng, -5, 5) * f
    p["a"], p["b"] = _u(rng, 120, 148) * f, _u(rng, 86, 106) * f  # body semi-axes
    p["body_wobble"] = (_u(rng, 0.01, 0.04), _u(rng, 0, 2 * np.pi), _u(rng, 0.01, 0.04), _u(rng, 0, 2 * np.pi))
    p["fat"] = _u(rng, 6, 16) * f  # subcutaneous fat thickness
    p["wall"] = _u(rng, 16, 22) * f  # chest wall incl. ribs
    p["rv"] = _u(rng, 13, 17) * f  # vertebral body radius
    p["spine_y"] = 0.42 * p["b"]  # vertebral body centre, posterior of body centre
    p["spine_curve"] = _u(rng, 2, 6) * f
    p["cord"] = (_u(rng, 4.5, 6.0) * f, _u(rng, 3.8, 5.0) * f)
    p["eso"] = (_u(rng, 6.5, 9.0) * f, _u(rng, 5.0, 7.0) * f, _u(rng, -8, 8) * f, _u(rng, 0, 2 * np.pi))
    p["heart"] = (_u(rng, 0.06, 0.16) * p["a"], _u(rng, -0.32, -0.2) * p["b"],  # centre offset
                  _u(rng, 0.26, 0.33) * p["a"], _u(rng, 0.28, 0.36) * p["b"],  # semi-axes
                  _u(rng, 0.12, 0.25), _u(rng, 0.2, 0.3))  # z centre, z semi-axis (fractions of length)
    p["lung_x"] = _u(rng, 0.44, 0.52)  # lung centres at +-lung_x * a
    p["lung_ab"] = (_u(rng, 0.33, 0.4), _u(rng, 0.62, 0.74))  # lung semi-axes (fractions of a, b)
    p["lung_base"] = (_u(rng, 0.02, 0.1), _u(rng, 0.06, 0.14))  # LungL, LungR (liver dome) base
    site = ["LungL", "LungR", "mediastinum"][int(rng.integers(3))]
    p["ptv_site"] = site
    p["ptv_off"] = (_u(rng, -0.3, 0.3), _u(rng, -0.3, 0.3))
    p["ptv_ab"] = (_u(rng, 16, 32) * f, _u(rng, 16, 30) * f)
    p["ptv_z"] = (_u(rng, 0.38, 0.68), _u(rng, 15, 32))  # centre (fraction), semi-axis mm
    p["ptv_harm"] = ((_u(rng, 0, 0.1), _u(rng, 0, 2 * np.pi)), (_u(rng, 0, 0.06), _u(rng, 0, 2 * np.pi)))
    p["ribs"] = (int(rng.integers(11, 16)), _u(rng, 0, 2 * np.pi))
    return p


def build_anatomy(rng: np.random.Generator, geometry: Geometry) -> Anatomy:
    """Draw one patient's anatomy on `geometry` (identity direction) from `rng`."""
    p = sample_params(rng, geometry)
    nz, ny, nx = geometry.shape
    dz, dy, dx = geometry.spacing
    ox, oy, oz = geometry.origin
    xs, ys, zs = ox + dx * np.arange(nx), oy + dy * np.arange(ny), oz + dz * np.arange(nz)  # voxel centres mm
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx) mm
    zlen = zs[-1] - zs[0]
    cx, cy, a0, b0, f = p["cx"], p["cy"], p["a"], p["b"], p["f"]

    names = ["PTV", "SpinalCord", "Esophagus", "Heart", "LungL", "LungR"]
    masks = {n: np.zeros(geometry.shape, dtype=np.uint8) for n in names}
    contours: dict[str, list[np.ndarray]] = {n: [] for n in names}
    body = np.zeros(geometry.shape, dtype=np.uint8)
    body_contours: list[np.ndarray] = []
    hu = np.full(geometry.shape, -1000.0)  # (z, y, x) HU before noise

    # The PTV centre is fixed in 3D; for a lung site it sits inside that lung at mid-height.
    ptv_zc = zs[0] + p["ptv_z"][0] * zlen
    la, lb = p["lung_ab"][0] * a0, p["lung_ab"][1] * b0
    if p["ptv_site"] == "mediastinum":
        ptv_x = cx + p["eso"][2] + p["ptv_off"][0] * 25 * f
        ptv_y = cy + p["spine_y"] - p["rv"] - 2 * p["eso"][1] - 14 * f - abs(p["ptv_off"][1]) * 30 * f
    else:
        side = 1 if p["ptv_site"] == "LungL" else -1  # LungL is on the patient's left, +x
        ptv_x = cx + side * p["lung_x"] * a0 + p["ptv_off"][0] * la
        ptv_y = cy + 0.05 * b0 + p["ptv_off"][1] * lb
    gtv_pieces: list[tuple[int, np.ndarray]] = []

    for k, z in enumerate(zs):
        zf = (z - zs[0]) / max(zlen, 1e-6)  # 0 at the first slice, 1 at the last
        wa, pa, wb, pb = p["body_wobble"]
        a = a0 * (1 + wa * np.sin(2 * np.pi * 0.8 * zf + pa))
        b = b0 * (1 + wb * np.sin(2 * np.pi * 0.8 * zf + pb))
        back = cy + 0.9 * b  # flat back on the couch
        body_poly, body[k] = settled_polygon(star_polygon(cx, cy, a, b, y_max=back, n=96), xs, ys)
        body_contours.append(_with_z(body_poly, z))
        cavity = Ellipse(cx, cy, a - p["wall"], b - p["wall"])  # inside the ribs

        yv = cy + p["spine_y"] + p["spine_curve"] * np.sin(np.pi * zf)
        vert = Ellipse(cx, yv, p["rv"], p["rv"] * 0.85)
        canal_y = yv + p["rv"] * 0.85 + 8 * f
        canal = Ellipse(cx, canal_y, 7.5 * f, 7 * f)
        arch = Ellipse(cx, canal_y, 13 * f, 12 * f)
        spinous = Ellipse(cx, canal_y + 14 * f, 5 * f, 9 * f)

        # ROIs, in an order where each one's obstacles are already placed.
        ca, cb = p["cord"]
        cord_x = cx + 0.8 * f * np.sin(3 * zf)
        polys: dict[str, np.ndarray] = {}
        polys["SpinalCord"] = star_polygon(cord_x, canal_y, ca, cb, containers=(canal,))
        ea, eb, ex, ep = p["eso"]
        eso_y = yv - p["rv"] * 0.85 - eb - 3 * f
        eso = Ellipse(cx + ex + 3 * f * np.sin(2 * np.pi * zf + ep), eso_y, ea, eb)
        polys["Esophagus"] = star_polygon(eso.cx, eso.cy, ea, eb, containers=(cavity,), obstacles=(vert.grown(1),))
        hx, hy, ha, hb, hzc, hzs = p["heart"]
        hs = _ellipsoid_scale(zf, hzc, hzs)
        heart = None
        if hs * min(ha, hb) > 4:
            heart = Ellipse(cx + hx, cy + hy, ha * hs, hb * hs)
            polys["Heart"] = star_polygon(heart.cx, heart.cy, heart.a, heart.b, containers=(cavity,),
                                          obstacles=(vert.grown(2), eso.grown(2)))
        lung_obstacles = (vert.grown(3), eso.grown(3), arch.grown(2)) + ((heart.grown(2),) if heart else ())
        for name, side, base in [("LungL", 1, p["lung_base"][0]), ("LungR", -1, p["lung_base"][1])]:
            ls = _lung_scale(zf, base)
            if ls * min(la, lb) > 4:
                polys[name] = star_polygon(cx + side * p["lung_x"] * a0, cy + 0.05 * b0, la * ls, lb * ls,
                                           containers=(cavity,), obstacles=lung_obstacles)
        ps = _ellipsoid_scale(z, ptv_zc, p["ptv_z"][1])
        pa_, pb_ = p["ptv_ab"]
        if ps * min(pa_, pb_) > 3:
            ptv_poly = star_polygon(ptv_x, ptv_y, pa_ * ps, pb_ * ps, harmonics=p["ptv_harm"],
                                    containers=(Ellipse(cx, cy, a - 6 * f, b - 6 * f),),
                                    obstacles=(vert.grown(2), arch.grown(2)), y_max=back - 6 * f)
            polys["PTV"] = ptv_poly
            gtv = np.round(np.array([ptv_x, ptv_y]) + 0.7 * (ptv_poly - [ptv_x, ptv_y]), DECIMALS)
            gtv_pieces.append((k, gtv))

        for name, poly in polys.items():
            poly, m = settled_polygon(poly, xs, ys)  # the mask is exactly the rasterised contour
            if m.any():
                masks[name][k] = m
                contours[name].append(_with_z(poly, z))

        # CT, painted from the outside in.
        inb = body[k].astype(bool)
        sl = np.where(inb, -90.0, -1000.0)  # subcutaneous fat
        muscle = Ellipse(cx, cy, a - p["fat"], b - p["fat"]).inside(gx, gy)
        sl[inb & muscle] = 40.0
        sl[inb & cavity.inside(gx, gy)] = 20.0  # mediastinal soft tissue
        ring = muscle & ~cavity.grown(-2 * f).inside(gx, gy) & Ellipse(cx, cy, a - p["wall"] + 7 * f,
                                                                       b - p["wall"] + 7 * f).inside(gx, gy)
        psi = np.arctan2((gy - cy) / b, (gx - cx) / a)
        n_ribs, rib_phase = p["ribs"]
        ribs = ring & (np.cos(n_ribs * psi + rib_phase + 0.6 * k) > 0.35) & (np.abs(gx - cx) > 20 * f)
        sternum = ring & (gy < cy) & (np.abs(gx - cx) < 14 * f)
        sl[inb & ribs] = 650.0
        sl[inb & sternum] = 450.0
        for name, value in [("LungL", -820.0), ("LungR", -820.0), ("Heart", 40.0), ("Esophagus", 30.0)]:
            sl[masks[name][k].astype(bool)] = value
        sl[inb & arch.inside(gx, gy)] = 650.0
        sl[inb & spinous.inside(gx, gy)] = 600.0
        sl[inb & vert.inside(gx, gy)] = 700.0  # cortical shell
        sl[inb & vert.grown(-2.5 * f).inside(gx, gy)] = 280.0  # cancellous core
        sl[inb & canal.inside(gx, gy)] = 12.0
        sl[masks["SpinalCord"][k].astype(bool)] = 32.0
        hu[k] = sl
    for k, gtv in gtv_pieces:
        hu[k][polygon_mask(gtv, xs, ys) & body[k].astype(bool)] = 35.0

    lungs = (masks["LungL"] | masks["LungR"]).astype(bool) & ~polygon_stack_mask(gtv_pieces, xs, ys, nz, ny, nx)
    noise = rng.normal(0.0, 12.0, geometry.shape)  # (z, y, x) HU, quantum noise
    texture = ndimage.gaussian_filter(rng.normal(0.0, 60.0, geometry.shape), sigma=(0.5, 1.0, 1.0))
    hu = hu + noise + np.where(lungs, texture, 0.0)
    hu[~body.astype(bool)] = -1000.0 + np.abs(noise[~body.astype(bool)]) * 0.3
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)  # (z, y, x) HU

    ptv_centre = (float(ptv_x), float(ptv_y), float(ptv_zc))
    return Anatomy(ct=ct, body=body, masks=masks, contours=contours, body_contours=body_contours,
                   ptv_centre_mm=ptv_centre, ptv_site=p["ptv_site"], params=p)


def polygon_stack_mask(pieces: list[tuple[int, np.ndarray]], xs: np.ndarray, ys: np.ndarray,
                       nz: int, ny: int, nx: int) -> np.ndarray:
    """(z, y, x) bool mask of per-slice polygons [(slice index, (N, 2) polygon)]."""
    out = np.zeros((nz, ny, nx), dtype=bool)
    for k, poly in pieces:
        out[k] |= polygon_mask(poly, xs, ys)
    return out


def _with_z(poly: np.ndarray, z: float) -> np.ndarray:
    """(N, 2) polygon on the plane z -> (N, 3) points (x, y, z) mm."""
    return np.column_stack([poly, np.full(len(poly), round(float(z), DECIMALS))])


def _ellipsoid_scale(z: float, centre: float, semi: float) -> float:
    """Cross-section scale of an ellipsoid at height z (0 outside it)."""
    u = (z - centre) / semi
    return float(np.sqrt(max(0.0, 1 - u * u)))


def _lung_scale(zf: float, base: float) -> float:
    """Lung cross-section scale along z (fraction of the scanned length): grows quickly above
    the diaphragm at `base` and tapers towards the apex above the top of the scan."""
    if zf < base:
        return 0.0
    grow = min(1.0, (zf - base) / 0.15) ** 0.5
    taper = np.sqrt(max(0.0, 1 - (max(0.0, zf - 0.75) / 0.45) ** 2))
    return float(grow * taper)
