"""A procedural CT phantom of an adult torso in Hounsfield units, with a label map, for tests and demos.

The phantom is built from smooth implicit shapes (ellipsoids, superellipses, tubes along polylines, shells at a
given depth under the skin, periodic vertebrae and ribs) evaluated with numpy at the voxel centres. Each shape
is painted with a one-voxel linear ramp of its signed distance, a box-filter approximation of the partial volume
effect, so edges are not aliased. Texture (lung vessels, bowel loops, colon gas, organ heterogeneity) comes from
smoothed noise on a fixed 4 mm lattice, so it does not depend on the voxel spacing; white noise of
:data:`NOISE_HU` HU is added last. Everything is seeded: a seed changes the noise and moves or scales organs by
a few millimetres, never the side they are on.

Geometry (RAS millimetres, as in Slicer): axis-aligned, ``i`` along +x (patient's Right), ``j`` along +y
(Anterior), ``k`` along +z (Superior); ``ijk_to_ras = diag(spacing) + origin`` with the grid centred at the
origin. The array is ``[k, j, i]`` (Slicer's ``arrayFromVolume`` order). The default field of view is
360 x 260 x 400 mm (x, y, z): from the thoracic inlet (z = +200) to the iliac crests (z = -200).

The anatomy is deliberately asymmetric so orientation errors (mirroring, flips) are visible:
heart, aortic arch, descending aorta, stomach and spleen on the patient's LEFT (x < 0); liver, gallbladder and
inferior vena cava on the RIGHT (x > 0); lungs and heart superior, kidneys and pelvis inferior; sternum anterior,
spine posterior. The stomach has an air-fluid level (gas on top).

======================  ======  ==================================================  =========================
structure (label)        id     position (x, y, z mm; approximate centre/extent)     HU
======================  ======  ==================================================  =========================
air/background            0     outside the body                                     -1000
skin                      1     outer 2.5 mm of the body                             +30
fat                       2     subcutaneous layer 8-30 mm; mediastinum; mesentery   -100 / -90
muscle                    3     body wall, shoulder girdle, paraspinal, diaphragm,   +45
                                psoas
lung                      4     z from the diaphragm (~0) to the apex (~+190)        -860, vessels up to +40
heart                     5     myocardium, centre (-25, +28, +24), apex left-ant.   +40
blood_pool                6     four chambers (left +320, right +200)                +200 / +320
aorta                     7     root (+12, +22, +62), arch to z ~ +163, descending   +300
                                left of the spine to the bifurcation (z ~ -170),
                                supra-aortic branches, iliac and renal arteries
liver                     8     right upper abdomen, centre (+62, +5, -45)           +60
spleen                    9     left posterior, centre (-92, -38, -22)               +50
kidney_left              10     (-66, -45, -105)                                     cortex +150, medulla +70
kidney_right             11     (+66, -45, -120), lower than the left                cortex +150, medulla +70
vertebra                 12     bodies at y ~ -48 (thoracic) to -36 (lumbar)         cortex +1000, marrow +250
rib                      13     12 pairs, posterior ends z ~ +178 ... -86            cortex +900, marrow +220
sternum                  14     anterior midline, z +25 ... +178                     cortex +900, marrow +220
disc                     15     between vertebral bodies                             +80
spinal_canal             16     behind the vertebral bodies                          +15
airway                   17     trachea (+6, -2), carina z ~ +120, main bronchi      -1000 (wall +50)
esophagus                18     (0, -24), to the stomach                             +40
stomach                  19     left upper abdomen (-50, +35, -35)                   wall +45, gas -1000,
                                                                                     content +20
bowel                    20     mesenteric loops, lower abdomen                      +35, gas pockets -950
colon                    21     ascending right, transverse, descending left         gas -950, stool -50
pancreas                 22     head (+30, +2, -88) to tail (-75, -22, -56)          +45
gallbladder              23     (+45, +50, -80)                                      +10
vena_cava                24     IVC right of the spine, SVC right of the aorta,      +90 / +250 / +150
                                renal veins (the left crosses in front of the aorta)
pulmonary_artery         25     trunk from the right ventricle to both hila          +200
portal_vein              26     into the liver                                       +150
costal_cartilage         27     anterior rib ends to the sternum                     +110
scapula                  28     posterior, z +100 ... +200                           cortex +900, marrow +220
clavicle                 29     top anterior, z ~ +185                               cortex +900, marrow +220
pelvis                   30     iliac wings, z below -150                            cortex +900, marrow +220
======================  ======  ==================================================  =========================

:func:`make_phantom` builds it (about 4.7 M voxels at the default 2 mm spacing, under 2 s);
:func:`phantom_orientation_markers` gives the RAS centroids of landmark structures for orientation tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VolumeError
from .volume import Volume

#: Label value -> structure name of the phantom's label map.
LABEL_NAMES: dict[int, str] = {
    0: "air/background", 1: "skin", 2: "fat", 3: "muscle", 4: "lung", 5: "heart", 6: "blood_pool", 7: "aorta",
    8: "liver", 9: "spleen", 10: "kidney_left", 11: "kidney_right", 12: "vertebra", 13: "rib", 14: "sternum",
    15: "disc", 16: "spinal_canal", 17: "airway", 18: "esophagus", 19: "stomach", 20: "bowel", 21: "colon",
    22: "pancreas", 23: "gallbladder", 24: "vena_cava", 25: "pulmonary_artery", 26: "portal_vein",
    27: "costal_cartilage", 28: "scapula", 29: "clavicle", 30: "pelvis",
}
_ID = {name: value for value, name in LABEL_NAMES.items()}

#: Standard deviation of the white noise added to every voxel (HU).
NOISE_HU = 8.0

#: Default field of view (x, y, z) in mm.
DEFAULT_SIZE_MM = (360.0, 260.0, 400.0)

_TEXTURE_MM = 4.0  # lattice of the smooth noise fields (mm), independent of the voxel spacing


@dataclass
class Phantom:
    """The phantom: ``volume`` (HU, float32 ``[K, J, I]``), ``labels`` (uint8 ``[K, J, I]``, same grid) and
    ``label_names`` (label value -> structure name, see the module docstring)."""

    volume: Volume
    labels: np.ndarray
    label_names: dict[int, str]

    def label_id(self, name: str) -> int:
        """Label value of a structure name; raises :class:`VolumeError` listing the names when unknown."""
        for value, label in self.label_names.items():
            if label == name:
                return value
        raise VolumeError(f"phantom has no structure {name!r}; known: {', '.join(self.label_names.values())}")

    def mask(self, *names: str) -> np.ndarray:
        """Boolean ``[K, J, I]`` mask of the union of the named structures."""
        return np.isin(self.labels, [self.label_id(n) for n in names])


# ---- small helpers ---------------------------------------------------------------------------------------
def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _gauss(t):
    return np.exp(-np.square(t))


def _rotation(long_axis, toward) -> np.ndarray:
    """3x3 matrix whose columns are an orthonormal frame: ``long_axis``, then ``toward`` made orthogonal."""
    e1 = np.asarray(long_axis, dtype=np.float64)
    e1 /= np.linalg.norm(e1)
    e2 = np.asarray(toward, dtype=np.float64)
    e2 = e2 - e1 * (e2 @ e1)
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


class _Box:
    """A sub-box of the grid: index slices ``(k, j, i)`` and broadcastable RAS coordinates X, Y, Z (mm)."""

    def __init__(self, grid: "_Grid", lo, hi):
        sl = []
        for axis, coords in enumerate((grid.x, grid.y, grid.z)):
            a = int(np.searchsorted(coords, lo[axis], side="left"))
            b = int(np.searchsorted(coords, hi[axis], side="right"))
            sl.append(slice(a, max(a, b)))
        self.slices = (sl[2], sl[1], sl[0])
        self.X = grid.x[sl[0]][None, None, :]
        self.Y = grid.y[sl[1]][None, :, None]
        self.Z = grid.z[sl[2]][:, None, None]
        self.shape = (self.Z.shape[0], self.Y.shape[1], self.X.shape[2])
        self.empty = min(self.shape) == 0

    def sub(self, grid_box: "_Box"):
        """Slices of ``grid_box`` (a box of the same grid) relative to this box, clipped; ``None`` if disjoint."""
        out = []
        for mine, other in zip(self.slices, grid_box.slices, strict=True):
            a, b = max(mine.start, other.start), min(mine.stop, other.stop)
            if b <= a:
                return None
            out.append(slice(a - mine.start, b - mine.start))
        return tuple(out)


class _Grid:
    """The voxel grid: 1D RAS coordinates of the voxel centres along x (i), y (j), z (k), in mm (float32)."""

    def __init__(self, size_mm, spacing):
        self.spacing = spacing
        self.n = np.maximum(2, np.round(np.asarray(size_mm) / spacing).astype(int))
        self.origin = -(self.n - 1) * spacing / 2.0
        self.x, self.y, self.z = (
            (self.origin[a] + spacing[a] * np.arange(self.n[a])).astype(np.float32) for a in range(3))
        self.shape = (int(self.n[2]), int(self.n[1]), int(self.n[0]))

    def box(self, lo, hi) -> _Box:
        return _Box(self, lo, hi)

    def full(self) -> _Box:
        return _Box(self, (-np.inf,) * 3, (np.inf,) * 3)


class _Canvas:
    """HU and label arrays being painted, structure after structure, with soft (partial-volume) edges."""

    def __init__(self, grid: _Grid):
        self.grid = grid
        self.hu = np.full(grid.shape, -1000.0, dtype=np.float32)
        self.labels = np.zeros(grid.shape, dtype=np.uint8)
        self.inv_h = np.float32(1.0 / float(np.mean(grid.spacing)))

    def paint(self, box: _Box, sd, value, label):
        """Blend ``value`` (HU, scalar or array over the box) where the signed distance ``sd`` (mm, negative
        inside) is below half a voxel, with a one-voxel linear ramp; set ``label`` (int or uint8 array) inside."""
        if box.empty:
            return
        sd = np.broadcast_to(sd, box.shape)
        w = np.clip(np.float32(0.5) - sd * self.inv_h, 0.0, 1.0)
        sub = self.hu[box.slices]
        sub += w * (value - sub)
        inside = sd < 0
        if np.ndim(label) == 0:
            self.labels[box.slices][inside] = label
        else:
            self.labels[box.slices][inside] = np.broadcast_to(label, box.shape)[inside]

    def paint_points(self, flat: np.ndarray, sd: np.ndarray, value: float, label: int) -> None:
        """:meth:`paint` on scattered voxels given by flat indices into the ``[K, J, I]`` arrays."""
        hu = self.hu.reshape(-1)
        w = np.clip(np.float32(0.5) - sd * self.inv_h, 0.0, 1.0)
        hu[flat] += w * (np.float32(value) - hu[flat])
        self.labels.reshape(-1)[flat[sd < 0]] = label

    def paint_bone(self, box: _Box, sd, cortex_hu: float, marrow_hu: float, label: int, cortex_mm: float = 1.5):
        """A bone: the whole shape at ``cortex_hu``, then its inside (``sd + cortex_mm``) at ``marrow_hu``."""
        self.paint(box, sd, cortex_hu, label)
        self.paint(box, sd + np.float32(cortex_mm), marrow_hu, label)


class _Texture:
    """Smooth, unit-variance, seeded noise fields on a fixed 4 mm lattice, sampled trilinearly on boxes."""

    def __init__(self, size_mm: np.ndarray, rng: np.random.Generator, sigmas_mm):
        from scipy.ndimage import gaussian_filter

        # The lattice depends on the field of view only, so the texture is the same at every voxel spacing.
        self.lo = -np.asarray(size_mm, dtype=np.float64) / 2.0 - 2 * _TEXTURE_MM
        n = np.ceil(np.asarray(size_mm) / _TEXTURE_MM).astype(int) + 6
        self.fields = []
        for sigma in sigmas_mm:
            f = gaussian_filter(rng.standard_normal((n[2], n[1], n[0])).astype(np.float32), sigma / _TEXTURE_MM,
                                mode="wrap")
            self.fields.append(f / f.std())

    def sample(self, index: int, box: _Box) -> np.ndarray:
        """Field ``index`` at the voxel centres of ``box``, shape ``box.shape`` (float32)."""
        out = self.fields[index]
        for axis, coords in ((0, box.Z.ravel()), (1, box.Y.ravel()), (2, box.X.ravel())):
            pos = (coords - self.lo[2 - axis]) / _TEXTURE_MM
            i0 = np.clip(np.floor(pos).astype(int), 0, out.shape[axis] - 2)
            w = (pos - i0).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = -1
            w = w.reshape(shape)
            out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
        return out


# ---- signed distances (mm, negative inside; first-order approximations away from the surface) -------------
def _ellipsoid_sd(box: _Box, center, semi, rotation=None):
    p = (box.X - np.float32(center[0]), box.Y - np.float32(center[1]), box.Z - np.float32(center[2]))
    if rotation is None:
        local = p
    else:
        r = np.asarray(rotation, dtype=np.float32)
        local = tuple(r[0, a] * p[0] + r[1, a] * p[1] + r[2, a] * p[2] for a in range(3))
    q2 = sum(np.square(c / np.float32(s)) for c, s in zip(local, semi, strict=True))
    g2 = sum(np.square(c / np.float32(s * s)) for c, s in zip(local, semi, strict=True))
    q = np.sqrt(q2)
    grad = np.maximum(np.sqrt(g2) / np.maximum(q, 1e-6), np.float32(1.0 / max(semi)))
    return (q - 1.0) / grad


def _ellipse_sd(u, v, a, b):
    """2D ellipse with semi-axes ``a`` (along u) and ``b`` (along v); arrays broadcast."""
    q = np.sqrt(np.square(u / a) + np.square(v / b))
    g = np.sqrt(np.square(u / (a * a)) + np.square(v / (b * b)))
    grad = np.maximum(g / np.maximum(q, 1e-6), 1.0 / np.maximum(a, b))
    return (q - 1.0) / grad


def _tube_sd(grid: _Grid, points, radii):
    """Tube of varying radius along a polyline: returns (box, sd) with sd = +inf far from every segment."""
    points = np.asarray(points, dtype=np.float64)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(points),))
    margin = radii.max() + 2.0 * float(np.max(grid.spacing))
    box = grid.box(points.min(0) - margin, points.max(0) + margin)
    sd = np.full(box.shape, np.inf, dtype=np.float32)
    if box.empty:
        return box, sd
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:], strict=True):
        m = max(ra, rb) + 2.0 * float(np.max(grid.spacing))
        seg = grid.box(np.minimum(a, b) - m, np.maximum(a, b) + m)
        rel = box.sub(seg)
        if rel is None:
            continue
        ab = (b - a).astype(np.float32)
        length2 = max(float(ab @ ab), 1e-9)
        d = (seg.X - np.float32(a[0]), seg.Y - np.float32(a[1]), seg.Z - np.float32(a[2]))
        t = np.clip((d[0] * ab[0] + d[1] * ab[1] + d[2] * ab[2]) / np.float32(length2), 0.0, 1.0)
        dist = np.sqrt(np.square(d[0] - t * ab[0]) + np.square(d[1] - t * ab[1]) + np.square(d[2] - t * ab[2]))
        np.minimum(sd[rel], dist - (np.float32(ra) + t * np.float32(rb - ra)), out=sd[rel])
    return box, sd


def _superellipse_sd(x, y, a, b, p):
    """Signed distance to ``|x/a|^p + |y/b|^p = 1`` by the gradient-normalised implicit function."""
    u = np.abs(x) / a
    v = np.abs(y) / b
    up, vp = u ** p, v ** p
    s = up + vp
    f = s ** (1.0 / p)
    gx = up / np.maximum(u, 1e-6) / a
    gy = vp / np.maximum(v, 1e-6) / b
    grad = f / np.maximum(s, 1e-12) * np.sqrt(np.square(gx) + np.square(gy))
    return (f - 1.0) / np.maximum(grad, 1.0 / np.maximum(a, b))


# ---- the anatomy -----------------------------------------------------------------------------------------
class _Anatomy:
    """Shared geometry of the torso: body outline, wall layers, diaphragm, spine line; seeded perturbations."""

    def __init__(self, grid: _Grid, rng: np.random.Generator):
        self.grid = grid
        self.rng = rng
        self.scale = 1.0 + float(np.clip(rng.normal(0.0, 0.015), -0.03, 0.03))
        z = grid.z[:, None, None]
        self.ax = (152 + 8 * _gauss((z - 80) / 90) - 10 * _gauss((z + 90) / 60)) * self.scale
        self.b_ant = (108 + 8 * _gauss((z + 120) / 70)) * self.scale
        self.b_post = np.full_like(z, 108 * self.scale)
        # Elliptic angle around the body axis: 0 at the back midline, pi at the front (does not depend on z).
        x2, y2 = grid.x[None, None, :], grid.y[None, :, None]
        self.psi = np.arctan2(np.abs(x2) / 152.0, -y2 / 108.0).astype(np.float32)  # (1, J, I)
        self.body_sd = self._body_sd()
        self.cavity_sd: np.ndarray | None = None  # set by _paint_body: sd of the inner wall (body cavity)
        self.kidney_hilum: dict[str, np.ndarray] = {}  # set by _paint_abdomen
        self.heart_center = self.heart_rot = self.ra_center = None  # set by _paint_thorax
        ant = _smoothstep((self.psi - 1.2) / 1.2)
        abd = _smoothstep((20.0 - z) / 100.0)
        self.t_fat = (8 + 4 * ant + 12 * abd * (0.5 + 0.5 * ant)).astype(np.float32)
        self.t_mus = (11 + 26 * _gauss(self.psi / 0.42) + 70 * _smoothstep((z - 125) / 75)
                      + 12 * _gauss((self.psi - 2.3) / 0.5) * _smoothstep((z - 70) / 60)).astype(np.float32)

    def jitter(self, sigma_mm: float = 2.0, n: int = 3) -> np.ndarray:
        """A seeded offset (mm) of a few millimetres (clipped to 2 sigma)."""
        return np.clip(self.rng.normal(0.0, sigma_mm, n), -2 * sigma_mm, 2 * sigma_mm)

    def vary(self, sigma: float = 0.03) -> float:
        """A seeded scale factor near 1."""
        return 1.0 + float(np.clip(self.rng.normal(0.0, sigma), -2 * sigma, 2 * sigma))

    def _body_sd(self) -> np.ndarray:
        g = self.grid
        out = np.empty(g.shape, dtype=np.float32)
        split = int(np.searchsorted(g.y, 0.0))
        x = g.x[None, None, :]
        for sl, b, p in ((slice(0, split), self.b_post, 3.2), (slice(split, None), self.b_ant, 2.2)):
            y = g.y[sl][None, :, None]
            out[:, sl, :] = _superellipse_sd(x, y, self.ax, b, p)
        return out

    @staticmethod
    def diaphragm_z(x, y):
        """Height z(x, y) of the diaphragm (mm): two flat-topped domes, the right (+16 at x = +65) higher than
        the left (+4 at x = -65), falling steeply to the lateral (about -35) and posterior (about -45)
        recesses (less steeply anteriorly), never below -55; a shallow dip under the heart."""
        def dome(top, cx, side):
            dx = x - cx
            sx = np.where(dx * side > 0, 55.0, 69.0)  # steeper on the lateral side
            r2 = np.square(dx / sx) + np.square((y + 5.0) / np.where(y > -5.0, 85.0, 60.0))
            return top - 15.0 * np.square(r2)

        right, left = dome(16.0, 65.0, 1.0), dome(4.0, -65.0, -1.0)
        k = 5.0
        top = np.maximum(right, left)
        smooth_max = top + k * np.log1p(np.exp(-np.abs(right - left) / k))
        dip = 8.0 * _gauss(x / 35.0) * _gauss((y - 25.0) / 50.0)
        return np.maximum(smooth_max - dip, -55.0)

    def below_diaphragm_sd(self, box: _Box, margin: float):
        """Signed distance (mm, vertical) of the region more than ``margin`` below the diaphragm."""
        return box.Z - (self.diaphragm_z(box.X, box.Y) - margin)

    def inside_cavity_sd(self, box: _Box, margin: float):
        """Signed distance of the body cavity shrunk by ``margin`` mm."""
        return self.cavity_sd[box.slices] + margin

    def spine_block_sd(self, box: _Box, ax: float, ay: float):
        """An elliptic column (semi-axes ``ax``, ``ay`` mm) around the spine, kept clear by organs and lungs."""
        return _ellipse_sd(box.X, box.Y - (self.spine_y(box.Z) - 6.0), ax, ay)

    @staticmethod
    def spine_y(z):
        """y of the vertebral body centre (mm): thoracic -48, lumbar -36 (lordosis)."""
        return -42.0 - 6.0 * np.tanh((z + 30.0) / 70.0)

    @staticmethod
    def spine_semi(z):
        """Semi-axes (x, y) of the vertebral body cross-section (mm), larger in the lumbar spine."""
        s = _smoothstep((60.0 - z) / 200.0)
        return 18.0 + 6.0 * s, 14.0 + 4.0 * s


def make_phantom(seed: int = 0, spacing_mm=2.0, size_mm=DEFAULT_SIZE_MM) -> Phantom:
    """Build the torso phantom (see the module docstring for structures, HU and positions).

    ``spacing_mm``: voxel size, a number or ``(x, y, z)`` (mm). ``size_mm``: field of view ``(x, y, z)`` in mm,
    centred at the origin; the anatomy keeps its size in mm (a smaller field of view crops it).
    Returns a :class:`Phantom` whose volume is named ``"phantom"``. Deterministic for a given ``seed`` (a
    non-negative integer). Raises :class:`VolumeError` for a bad seed, spacing or size, or for more than 64 M voxels
    (finer than about 0.8 mm over the default field of view). About 1 s at 2 mm on one CPU core.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise VolumeError(f"phantom: seed must be a non-negative integer, got {seed!r}")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    size = np.broadcast_to(np.asarray(size_mm, dtype=np.float64), (3,)).copy()
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise VolumeError(f"phantom: spacing_mm must be positive, got {spacing_mm!r}")
    if not (np.isfinite(size).all() and (size >= 2 * spacing).all()):
        raise VolumeError(f"phantom: size_mm must hold at least two voxels per axis, got {size_mm!r}")
    n = np.maximum(2, np.round(size / spacing))
    if np.prod(n) > 64e6:
        raise VolumeError(f"phantom: {int(np.prod(n) / 1e6)} M voxels is too many; use a coarser spacing_mm")
    rng = np.random.default_rng(seed)
    grid = _Grid(size, spacing)
    canvas = _Canvas(grid)
    anat = _Anatomy(grid, rng)
    tex = _Texture(size, rng, (5.0, 5.0, 12.0))

    _paint_body(canvas, anat)
    _paint_abdomen(canvas, anat, tex)
    _paint_thorax(canvas, anat, tex)
    _paint_vessels(canvas, anat)
    _paint_spine(canvas, anat)
    _paint_ribs(canvas, anat)
    _paint_other_bones(canvas, anat)

    hu = canvas.hu
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(NOISE_HU)
    np.clip(hu, -1024.0, 3071.0, out=hu)
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.diag(spacing)
    ijk_to_ras[:3, 3] = grid.origin
    volume = Volume(hu, ijk_to_ras, name="phantom")
    return Phantom(volume=volume, labels=canvas.labels, label_names=dict(LABEL_NAMES))


def _paint_body(c: _Canvas, a: _Anatomy) -> None:
    """Skin, subcutaneous fat, body-wall muscle, body cavity (thorax: mediastinal fat; abdomen: visceral fat),
    diaphragm sheet."""
    full = c.grid.full()
    sd = a.body_sd
    c.paint(full, sd, 30.0, _ID["skin"])
    c.paint(full, sd + 2.5, -100.0, _ID["fat"])
    c.paint(full, sd + a.t_fat, 45.0, _ID["muscle"])
    a.cavity_sd = sd + a.t_fat + a.t_mus
    c.paint(full, a.cavity_sd, -90.0, _ID["fat"])
    # Diaphragm: a 5 mm muscle sheet under the lungs, inside the cavity.
    box = c.grid.box((-200, -150, -120), (200, 150, 60))
    zd = a.diaphragm_z(box.X, box.Y)
    sheet = np.maximum(np.abs(box.Z - zd) - 2.5, a.cavity_sd[box.slices])
    c.paint(box, sheet, 45.0, _ID["muscle"])


def _paint_abdomen(c: _Canvas, a: _Anatomy, tex: _Texture) -> None:
    g = c.grid
    # Bowel loops and mesenteric fat in front of the retroperitoneum, below the diaphragm.
    box = g.box((-200, -150, -250), (200, 150, 40))
    cav = a.cavity_sd[box.slices]
    zd = a.diaphragm_z(box.X, box.Y)
    region = np.maximum(np.maximum(cav + 3.0, box.Z - (zd - 10.0)), (a.spine_y(box.Z) + 8.0) - box.Y)
    t1, t2, t3 = (tex.sample(i, box) for i in range(3))
    tissue = np.clip((t1 + 0.3) / 0.5 + 0.5, 0.0, 1.0)
    gas = np.clip((t2 - 1.8) / 0.3 + 0.5, 0.0, 1.0)
    value = -90.0 + tissue * (125.0 + 8.0 * t3)
    value += gas * (-950.0 - value)
    label = np.where((tissue > 0.5) | (gas > 0.5), _ID["bowel"], _ID["fat"]).astype(np.uint8)
    c.paint(box, region, value, label)

    below, inside = a.below_diaphragm_sd, a.inside_cavity_sd
    # Liver: right lobe + left lobe, under the diaphragm, clear of the spine.
    j = a.jitter()
    s = a.vary()
    box = g.box((-90, -110, -170), (170, 120, 40))
    rot = _rotation((1.0, 0.0, 0.25), (0.0, 1.0, 0.0))
    liver = np.minimum(_ellipsoid_sd(box, (62 + j[0], 5 + j[1], -45 + j[2]), (78 * s, 88 * s, 68 * s), rot),
                       _ellipsoid_sd(box, (-18 + j[0], 42 + j[1], -22 + j[2]), (58 * s, 40 * s, 28 * s)))
    liver = np.maximum(np.maximum(liver, below(box, 3.0)),
                       np.maximum(inside(box, 2.0), 4.0 - a.spine_block_sd(box, 34.0, 36.0)))
    c.paint(box, liver, 60.0 + 5.0 * tex.sample(2, box), _ID["liver"])
    # Gallbladder at the liver's inferior surface.
    box = g.box((10, 10, -130), (90, 90, -30))
    c.paint(box, _ellipsoid_sd(box, (45, 50, -80) + a.jitter(1.5), (15, 16, 30),
                               _rotation((0.2, 0.3, 1.0), (1.0, 0.0, 0.0))), 10.0, _ID["gallbladder"])

    # Stomach: wall, then gas above an air-fluid level and mottled content below.
    j = a.jitter()
    center = (-50 + j[0], 35 + j[1], -35 + j[2])
    box = g.box((-120, -40, -110), (20, 110, 40))
    rot = _rotation((0.3, 0.2, 1.0), (0.0, 1.0, 0.0))
    outer = np.maximum(np.maximum(_ellipsoid_sd(box, center, (50, 36, 40), rot), below(box, 3.0)), inside(box, 2.0))
    c.paint(box, outer, 45.0, _ID["stomach"])
    gas = np.clip((box.Z - (center[2] + 8.0)) * c.inv_h + 0.5, 0.0, 1.0)  # air-fluid level
    content = -1000.0 * gas + (1.0 - gas) * (20.0 + 12.0 * tex.sample(0, box))
    c.paint(box, outer + 4.0, content, _ID["stomach"])

    # Spleen: left, posterior, under the left dome.
    j = a.jitter()
    s = a.vary()
    box = g.box((-150, -130, -110), (-20, 40, 40))
    rot = _rotation((0.3, 0.9, 0.4), (1.0, 0.0, 0.0))
    spleen = np.maximum(np.maximum(_ellipsoid_sd(box, (-92 + j[0], -38 + j[1], -22 + j[2]),
                                                 (52 * s, 24 * s, 42 * s), rot), below(box, 3.0)), inside(box, 1.0))
    c.paint(box, spleen, 50.0 + 4.0 * tex.sample(2, box), _ID["spleen"])

    # Pancreas: head near the duodenum (right) to tail at the splenic hilum (left).
    box, sd = _tube_sd(g, [(30, 2, -88), (5, 12, -74), (-30, 6, -68), (-62, -12, -60), (-75, -22, -56)],
                       [14, 11, 10, 9, 7])
    c.paint(box, sd, 45.0, _ID["pancreas"])

    # Colon: ascending (right), transverse (anterior), descending (left); wall then gas/stool content.
    path = [(88, 18, -215), (90, 5, -160), (84, 10, -125), (65, 45, -125), (20, 68, -118), (-30, 62, -105),
            (-70, 40, -92), (-88, 18, -95), (-94, -2, -130), (-96, -8, -215)]
    radii = [27, 25, 22, 20, 19, 19, 19, 20, 19, 18]
    box, sd = _tube_sd(g, path, radii)
    c.paint(box, sd, 40.0, _ID["colon"])
    stool = np.clip((tex.sample(1, box) + 0.4) / 0.4 + 0.5, 0.0, 1.0)
    content = -950.0 * stool + (1.0 - stool) * (-40.0 + 50.0 * tex.sample(2, box))
    c.paint(box, sd + 3.0, content, _ID["colon"])

    # Psoas muscles beside the lumbar spine, growing downward.
    for side in (-1.0, 1.0):
        box, sd = _tube_sd(g, [(side * 27, -40, -40), (side * 38, -38, -120), (side * 52, -26, -215)], [6, 16, 22])
        c.paint(box, sd, 45.0, _ID["muscle"])

    # Kidneys in perirenal fat; left higher than right; upper pole medial and posterior.
    for side, name, z0 in ((-1.0, "kidney_left", -105.0), (1.0, "kidney_right", -120.0)):
        j = a.jitter()
        s = a.vary()
        center = (side * 66 + j[0], -45 + j[1], z0 + j[2])
        rot = _rotation((side * 0.25, 0.2, 1.0), (side * -0.5, 1.0, 0.0))
        box = g.box(np.array(center) - 75, np.array(center) + 75)
        semi = (50 * s, 27 * s, 23 * s)
        c.paint(box, _ellipsoid_sd(box, center, tuple(v + 8 for v in semi), rot), -95.0, _ID["fat"])
        kidney = _ellipsoid_sd(box, center, semi, rot)
        c.paint(box, kidney, 150.0, _ID[name])
        c.paint(box, kidney + 7.0, 70.0, _ID[name])
        e2 = rot[:, 1]  # medial and anterior: the hilum side
        c.paint(box, _ellipsoid_sd(box, np.array(center) + 14 * e2, (25, 10, 9), rot), -60.0, _ID[name])
        a.kidney_hilum[name] = np.array(center) + 30 * e2


def _paint_thorax(c: _Canvas, a: _Anatomy, tex: _Texture) -> None:
    g = c.grid
    # Heart geometry (kept for the lungs' mediastinum and the vessels).
    j = a.jitter()
    s = a.vary()
    center = np.array([-25.0, 28.0, 24.0]) + j
    rot = _rotation((-0.62, 0.45, -0.64), (0.0, 1.0, 0.0))
    e1, e2, e3 = rot.T
    ra_center = center - 26 * e1 + 10 * e2 + 22 * e3
    a.heart_center, a.heart_rot, a.ra_center = center, rot, ra_center
    hbox = g.box(center - 90, center + 90)

    def heart_sd(b: _Box, grow: float = 0.0):
        sd = np.minimum(_ellipsoid_sd(b, center, (62 * s + grow, 46 * s + grow, 40 * s + grow), rot),
                        _ellipsoid_sd(b, ra_center, (28 + grow, 28 + grow, 30 + grow)))
        return np.maximum(sd, a.diaphragm_z(b.X, b.Y) + 2.0 - b.Z)

    # Lungs: the thoracic cavity above the diaphragm and below the apex, minus the mediastinum.
    box = g.box((-200, -150, -80), (200, 150, 250))
    zd = a.diaphragm_z(box.X, box.Y)
    apex = 195.0 - 0.01 * (np.square(np.abs(box.X) - 55.0) + np.square(box.Y + 5.0))
    column = _ellipse_sd(box.X - 2.0, box.Y - 2.0, 20.0 + 4.0 * _smoothstep((box.Z - 120) / 60), 90.0)
    column = np.maximum(column, 60.0 - box.Z)
    med = np.minimum(column, a.spine_block_sd(box, 30.0, 30.0))
    rel = box.sub(hbox)
    # The heart, and fat pads where it meets the diaphragm.
    pad = np.maximum(heart_sd(hbox, grow=18.0), hbox.Z - (a.diaphragm_z(hbox.X, hbox.Y) + 25.0))
    med[rel] = np.minimum(med[rel], np.minimum(heart_sd(hbox) - 4.0, pad))
    lung = np.maximum(np.maximum(a.cavity_sd[box.slices] + 2.0, zd + 2.5 - box.Z),
                      np.maximum(box.Z - apex, -med))
    # Vessel-like texture: tubes where two smooth fields cross zero; thicker towards the hila.
    t1, t2 = tex.sample(0, box), tex.sample(1, box)
    hilum = _gauss(np.hypot(np.abs(box.X) - 45.0, box.Y + 5.0) / 45.0) * _gauss((box.Z - 100.0) / 50.0)
    width = 0.10 + 0.35 * hilum
    vessel = np.exp(-(np.square(t1) + np.square(t2)) / (2.0 * np.square(width)))
    parenchyma = -870.0 + 35.0 * _smoothstep(-(box.Y + 20.0) / 80.0)  # denser posteriorly (dependent)
    c.paint(box, lung, parenchyma + vessel * (40.0 - parenchyma), _ID["lung"])

    # Heart: myocardium, then four chambers (left heart brighter than right in the arterial phase).
    c.paint(hbox, heart_sd(hbox), 40.0, _ID["heart"])
    chambers = [  # (centre, semi-axes along e1/e2/e3, HU)
        (center + 16 * e1 - 12 * e2 + 2 * e3, (36 * s, 16 * s, 18 * s), 320.0),  # left ventricle
        (center + 4 * e1 + 24 * e2 + 4 * e3, (34 * s, 9 * s, 22 * s), 200.0),  # right ventricle
        (center - 38 * e1 - 18 * e2 + 2 * e3, (18, 20, 18), 320.0),  # left atrium
        (ra_center, (22, 21, 24), 200.0),  # right atrium
    ]
    for ctr, semi, hu in chambers:
        c.paint(hbox, _ellipsoid_sd(hbox, ctr, semi, rot), hu, _ID["blood_pool"])

    # Airway: trachea with a wall, carina, main bronchi (the left longer and more horizontal).
    airways = [_tube_sd(g, path, r) for path, r in (
        ([(6, -2, 215), (6, -2, 150), (4, -4, 120)], 9.0),  # trachea
        ([(4, -4, 120), (40, -12, 98), (55, -14, 85)], 6.5),  # right main bronchus
        ([(4, -4, 120), (-45, -16, 100), (-60, -18, 88)], 6.0))]  # left main bronchus
    for box, sd in airways:
        c.paint(box, sd - 2.0, 50.0, _ID["airway"])
    for box, sd in airways:
        c.paint(box, sd, -1000.0, _ID["airway"])
    # Esophagus: behind the trachea, through the diaphragm into the stomach.
    box, sd = _tube_sd(g, [(0, -24, 215), (0, -24, 100), (-8, -18, 20), (-30, 5, -15)], 7.0)
    c.paint(box, sd, 40.0, _ID["esophagus"])


def _paint_vessels(c: _Canvas, a: _Anatomy) -> None:
    g = c.grid
    # Aorta: root, ascending, arch (passing left of the trachea), descending left of the spine, bifurcation.
    aorta = [(12, 22, 62), (16, 24, 105), (13, 22, 140), (4, 14, 158), (-12, 4, 163), (-20, -12, 158),
             (-25, -25, 145), (-25, -30, 125), (-24, -30, 90), (-20, -26, 30), (-14, -16, -20), (-8, -6, -80),
             (-5, -4, -150), (-4, -4, -168)]
    radii = [15, 15, 14, 13, 12, 12, 12, 12, 12, 11, 11, 10, 10, 9]
    tubes = [(aorta, radii)]
    for side in (-1.0, 1.0):  # common iliac arteries
        tubes.append(([(-4, -4, -168), (side * 40, 0, -215)], [7, 6]))
    tubes += [([(10, 16, 158), (22, 10, 215)], [7, 6]),  # brachiocephalic trunk
              ([(-4, 12, 162), (-10, 10, 215)], [5, 5]),  # left common carotid
              ([(-16, -4, 160), (-32, -10, 215)], [6, 6])]  # left subclavian
    for hilum in a.kidney_hilum.values():  # renal arteries
        tubes.append(([(-6, -6, -95), hilum], [3.5, 3.0]))
    for path, r in tubes:
        box, sd = _tube_sd(g, path, r)
        c.paint(box, sd, 300.0, _ID["aorta"])
    # Vena cava: IVC right of the spine through the liver into the right atrium; SVC right of the aorta.
    ra = a.ra_center
    box, sd = _tube_sd(g, [(22, -4, -215), (24, -6, -100), (24, -4, -30), (20, 6, 10), ra], [11, 12, 13, 13, 12])
    c.paint(box, sd, 90.0, _ID["vena_cava"])
    box, sd = _tube_sd(g, [(34, 12, 215), (34, 14, 120), tuple(ra + np.array([0, 0, 15]))], [10, 10, 11])
    c.paint(box, sd, 250.0, _ID["vena_cava"])
    # Renal veins; the left one crosses in front of the aorta.
    front = np.array([0.0, 6.0, 0.0])
    for path in ([a.kidney_hilum["kidney_left"] + front, (-10, 14, -90), (22, 0, -95)],
                 [a.kidney_hilum["kidney_right"] + front, (24, 2, -105)]):
        box, sd = _tube_sd(g, path, 5.0)
        c.paint(box, sd, 150.0, _ID["vena_cava"])
    # Pulmonary trunk from the right ventricle, up and to the left, splitting to both hila.
    rv_top = a.heart_center + 30 * a.heart_rot[:, 1] - 10 * a.heart_rot[:, 0] + np.array([0, 0, 30])
    for path, r in (([rv_top, (-10, 22, 110), (-18, 8, 118)], [13, 13, 11]),
                    ([(-18, 8, 118), (-40, -6, 112), (-58, -8, 104)], [10, 9, 7]),
                    ([(-18, 8, 118), (10, 6, 112), (40, -2, 104), (55, -4, 98)], [10, 10, 9, 7])):
        box, sd = _tube_sd(g, path, r)
        c.paint(box, sd, 200.0, _ID["pulmonary_artery"])
    # Portal vein: from behind the pancreas neck into the liver, two branches.
    for path, r in (([(0, 8, -80), (25, 12, -62), (40, 12, -48)], [8, 8, 7]),
                    ([(40, 12, -48), (75, 5, -38)], [6, 5]), ([(40, 12, -48), (20, 40, -28)], [5, 4])):
        box, sd = _tube_sd(g, path, r)
        c.paint(box, sd, 150.0, _ID["portal_vein"])


def _paint_spine(c: _Canvas, a: _Anatomy) -> None:
    """Vertebral bodies, discs, posterior arches, spinous and transverse processes, spinal canal."""
    g = c.grid
    box = g.box((-70, -120, -250), (70, 10, 250))
    if box.empty:
        return
    Z = box.Z
    ysp = a.spine_y(Z)
    sx, sy = a.spine_semi(Z)
    # Vertebral coordinate s(z): one unit per vertebra, the period growing from 27 mm (top) to 36 mm (bottom).
    z_top, p0, slope = 200.0 + float(a.jitter(3.0, 1)[0]), 27.0, 9.0 / 400.0
    period = p0 + slope * (z_top - Z)
    s = np.log(period / p0) / slope
    zl = (s - np.floor(s) - 0.5) * period  # mm from the centre of the current vertebra
    half_body = 0.4 * period
    column = _ellipse_sd(box.X, box.Y - ysp, sx, sy)
    c.paint(box, column, 80.0, _ID["disc"])
    c.paint_bone(box, np.maximum(column, np.abs(zl) - half_body), 1000.0, 250.0, _ID["vertebra"])
    # Posterior elements around the canal.
    yc = ysp - sy - 9.0
    cx = 10.0 + 2.0 * _smoothstep((60.0 - Z) / 200.0)
    canal = _ellipse_sd(box.X, box.Y - yc, cx, 8.0)
    zcap = np.abs(zl) - 0.33 * period
    ring = np.maximum(np.maximum(_ellipse_sd(box.X, box.Y - (yc - 1.0), cx + 7.0, 16.0), -canal), zcap)
    lumbar = _smoothstep((20.0 - Z) / 100.0)
    tilt = 0.5 * (1.0 - lumbar)  # thoracic spinous processes point downward
    zl_sp = zl + tilt * (box.Y - (yc - 12.0))
    spinous = np.maximum(_ellipse_sd(box.X, box.Y - (yc - 20.0), 4.0, 16.0 + 4.0 * lumbar),
                         np.abs(zl_sp) - 0.22 * period)
    tp_x = np.abs(box.X) - (cx + 16.0 + 6.0 * lumbar)
    tp_y = box.Y - (yc + 2.0 - 6.0 * (1.0 - lumbar))
    transverse = np.maximum(_ellipse_sd(tp_x, tp_y, 14.0 + 6.0 * lumbar, 5.0), np.abs(zl) - 0.18 * period)
    posterior = np.minimum(np.minimum(ring, spinous), transverse)
    c.paint_bone(box, posterior, 900.0, 250.0, _ID["vertebra"], cortex_mm=2.0)
    c.paint(box, canal, 15.0, _ID["spinal_canal"])


# Per rib (1 to 12): how far the anterior end drops below the posterior end (mm), elliptic angle where the
# bone ends and where the costal cartilage ends (0: floating rib), half-height of the cross-section (mm).
_RIB_DROP = np.array([22.0, 34.0, 45.0, 55.0, 62.0, 68.0, 72.0, 72.0, 72.0, 70.0, 62.0, 50.0])
_RIB_PSI_BONE = np.array([2.45, 2.4, 2.35, 2.3, 2.25, 2.2, 2.15, 2.1, 2.05, 2.0, 1.7, 1.35])
_RIB_PSI_CARTILAGE = np.array([np.pi - 0.14] * 7 + [2.85, 2.75, 2.65, 0.0, 0.0])
_RIB_HALF_HEIGHT = np.linspace(4.0, 6.0, 12)


def _paint_ribs(c: _Canvas, a: _Anatomy) -> None:
    """Twelve pairs of ribs along the inner body wall, sloping down anteriorly, with costal cartilages.

    A rib is a band at the rib depth under the skin whose height z falls with the elliptic angle psi from the
    posterior end (psi = 0.33, near the transverse process) to the anterior end; each voxel near the rib depth is
    tested against the three ribs nearest to it."""
    g = c.grid
    box = g.box((-200, -150, -130), (200, 150, 250))
    if box.empty:
        return
    psi = a.psi[:, box.slices[1], box.slices[2]]
    depth = a.t_fat[box.slices] + a.t_mus[box.slices] - 5.0
    dr = a.body_sd[box.slices] + depth  # radial offset from the rib line (mm)
    kk, jj, ii = np.nonzero((np.abs(dr) < 10.0) & (psi > 0.25))
    if kk.size == 0:
        return
    z = box.Z.ravel()[kk]
    ps = psi[0, jj, ii]
    d = dr[kk, jj, ii]
    # Fraction of the drop reached at psi: linear along the shaft, rising again along the cartilage.
    slope = np.clip((ps - 0.3) / 2.0, 0.0, 1.0) - 0.2 * _smoothstep((ps - 2.3) / (np.pi - 2.3))
    pitch = 24.0
    z_first = 178.0 + float(a.jitter(2.0, 1)[0])  # posterior end of the first rib
    n_mid = np.round((z_first - (z + slope * 60.0)) / pitch).astype(int)
    bone = np.full(z.shape, np.inf, dtype=np.float32)
    cart = np.full(z.shape, np.inf, dtype=np.float32)
    arc_mm = 120.0  # converts angles to an approximate distance along the wall
    for n in (n_mid - 1, n_mid, n_mid + 1):
        valid = (n >= 0) & (n < 12)
        n = np.clip(n, 0, 11)
        dz = z + slope * _RIB_DROP[n] - (z_first - n * pitch)
        half_h, psi_bone = _RIB_HALF_HEIGHT[n], _RIB_PSI_BONE[n]
        sd_bone = np.maximum(_ellipse_sd(dz, d, half_h, 3.5),
                             np.maximum((0.33 - ps) * arc_mm, (ps - psi_bone) * arc_mm))
        sd_cart = np.maximum(_ellipse_sd(dz, d, half_h + 1.0, 4.5),
                             np.maximum((psi_bone - ps) * arc_mm, (ps - _RIB_PSI_CARTILAGE[n]) * arc_mm))
        bone = np.minimum(bone, np.where(valid, sd_bone, np.inf))
        cart = np.minimum(cart, np.where(valid, sd_cart, np.inf))
    flat = np.ravel_multi_index((kk + box.slices[0].start, jj + box.slices[1].start, ii + box.slices[2].start),
                                g.shape)
    c.paint_points(flat, cart, 110.0, _ID["costal_cartilage"])
    c.paint_points(flat, bone, 900.0, _ID["rib"])
    c.paint_points(flat, bone + np.float32(1.2), 220.0, _ID["rib"])


def _paint_other_bones(c: _Canvas, a: _Anatomy) -> None:
    """Sternum, scapulae, clavicles and iliac wings (shells at a depth under the skin)."""
    g = c.grid
    # Sternum: manubrium (wide, thick), body, xiphoid; just under the anterior chest wall.
    box = g.box((-40, 40, 15), (40, 150, 190))
    if not box.empty:
        Z = box.Z
        depth = a.t_fat[box.slices] + 10.0
        width = np.where(Z > 140, 26.0, np.where(Z > 45, 15.0, 8.0))
        thick = np.where(Z > 140, 8.0, 6.0)
        sd = np.maximum(np.abs(a.body_sd[box.slices] + depth) - thick, np.abs(box.X) - width)
        sd = np.maximum(sd, np.maximum(Z - 178.0, 25.0 - Z))
        c.paint_bone(box, sd, 900.0, 220.0, _ID["sternum"])
    # Scapulae: thin triangular plates over the upper posterior ribs.
    box = g.box((-200, -150, 90), (200, 0, 250))
    if not box.empty:
        psi = a.psi[:, box.slices[1], box.slices[2]]
        depth = a.t_fat[box.slices] + 12.0
        lateral = 0.55 + 0.65 * _smoothstep((box.Z - 100.0) / 90.0)
        sd = np.maximum(np.abs(a.body_sd[box.slices] + depth) - 3.0,
                        np.maximum((0.5 - psi) * 120.0, (psi - lateral) * 120.0))
        sd = np.maximum(sd, 100.0 - box.Z)
        c.paint_bone(box, sd, 900.0, 220.0, _ID["scapula"], cortex_mm=1.2)
    # Clavicles: from the manubrium laterally and slightly up and back.
    for side in (-1.0, 1.0):
        box, sd = _tube_sd(g, [(side * 24, 88, 182), (side * 70, 88, 188), (side * 120, 62, 196),
                               (side * 150, 40, 200)], [8, 7, 7, 8])
        c.paint_bone(box, sd, 900.0, 220.0, _ID["clavicle"])
    # Iliac wings: curved plates low in the abdomen, crest highest laterally.
    box = g.box((-200, -150, -260), (200, 150, -130))
    if not box.empty:
        psi = a.psi[:, box.slices[1], box.slices[2]]
        Z = box.Z
        crest = -150.0 - 28.0 * np.square((psi - 1.35) / 0.8)
        depth = a.t_fat[box.slices] + 28.0 + 0.3 * np.clip(-150.0 - Z, 0, None)
        sd = np.maximum(np.abs(a.body_sd[box.slices] + depth) - 5.0, Z - crest)
        sd = np.maximum(sd, np.maximum((0.45 - psi) * 120.0, (psi - 1.95) * 120.0))
        c.paint_bone(box, sd, 900.0, 220.0, _ID["pelvis"], cortex_mm=2.0)


def phantom_orientation_markers(phantom: Phantom) -> dict[str, np.ndarray]:
    """RAS centroids (mm, shape (3,) each) of landmark structures, for orientation tests.

    Keys: ``heart`` (myocardium and blood pool; patient's left, x < 0), ``liver`` (right, x > 0), ``spleen``,
    ``stomach``, ``spine`` (vertebrae; posterior), ``sternum`` (anterior), ``kidney_left``, ``kidney_right``,
    ``lungs`` (superior to the kidneys). In an anterior view (camera in front, head up) the heart appears on the
    image's right; seen from above (superior view, anterior up) it appears on the image's right too.
    Structures outside a cropped field of view are left out.
    """
    groups = {"heart": ("heart", "blood_pool"), "liver": ("liver",), "spleen": ("spleen",),
              "stomach": ("stomach",), "spine": ("vertebra",), "sternum": ("sternum",),
              "kidney_left": ("kidney_left",), "kidney_right": ("kidney_right",), "lungs": ("lung",)}
    out = {}
    for key, names in groups.items():
        kji = np.argwhere(phantom.mask(*names))
        if len(kji):
            out[key] = phantom.volume.ijk_to_ras_points(kji[:, ::-1].mean(0))
    return out
