"""Volume-space quantities of the reference renderer: TF lookup tables, gradients, the lighting rig and the
precomputed, view-independent illumination volumes.

Everything here lives on the working grid (a :class:`~RenderFMLib.volume.Volume`, arrays indexed ``[k, j, i]``)
and is computed once per volume and transfer function (TF); :mod:`RenderFMLib.reference` samples it along rays.

Lighting model of the cinematic mode (all directions in RAS, world-fixed, so the scene is static):

* **Key light**: a directional light (``LightingRig.key_direction`` points from the scene *towards* the light).
  Its transmittance volume ``T_key`` holds, per voxel, the fraction of key light that reaches the voxel centre
  through the material between it and the light (volumetric shadows). It is propagated slice by slice along the
  volume axis closest to the light direction in a sheared frame that follows the light (no numerical blur),
  with pre-integrated attenuation between slices (smooth in the position of a surface between voxel centres)
  and a small lateral blur per slice (soft shadows whose penumbra widens with the distance to the occluder,
  ``LightingRig.shadow_softness_mm``).
* **Sky light / ambient occlusion**: ``sky`` is the weighted mean, over 14 fixed directions (6 axes, 8 diagonals;
  weights favour superior), of the transmittance towards that direction with an exponential falloff of
  ``LightingRig.ao_radius_mm`` (only occluders within about that distance count).
* **Multiple scattering** (approximation): ``scatter`` (RGB) is light re-emitted by nearby lit material, a
  Gaussian low-pass (``LightingRig.scatter_radius_mm``) of ``density * albedo * T_key`` normalised by the
  low-pass of ``density``; it carries light into shadows and tints it with the neighbours' colour.

Extinction comes from the TF exactly as in the renderer: a voxel of per-unit-distance opacity ``a`` (scalar
opacity times gradient-opacity factor) attenuates light over ``L`` mm by ``(1 - a) ** (L / unit_distance)``.
Light fields are stored as optical depths and read a voxel and a half outside surfaces (:func:`light_offset`,
:func:`local_light_depth`); the gradient comes from the HU smoothed by a 3x3x3 binomial kernel.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from .errors import RenderFMError
from .transfer import TransferFunction
from .volume import Volume

#: Number of entries of the HU lookup tables (linear interpolation between entries).
TABLE_SIZE = 4096

#: Largest per-unit-distance opacity used for extinction (keeps optical depths finite).
MAX_OPACITY = 0.9999

#: Light fields (key transmittance, sky, scatter) are read this many voxels (largest spacing) away from a sample:
#: out of the surface along the normal for surface-like samples, towards the key light for volume-like ones (see
#: :func:`light_offset`), then attenuated by the material in between (:func:`local_light_depth`). Light inside a
#: surface falls off within a voxel or two, faster than a coarse grid can represent; read in place, it makes lit
#: surfaces terraced (voxel-periodic bands that follow the surface's height).
LIGHT_BIAS_VOXELS = 1.5

#: Gradient magnitudes (HU/mm) below this are treated as zero (no normal), as VTK does with tiny gradients.
MIN_GRADIENT = 1e-3


# ---- transfer-function lookup table ---------------------------------------------------------------------------
@dataclass
class TFTable:
    """A TF sampled at :data:`TABLE_SIZE` HU values for fast lookup (linear interpolation between entries).

    ``table`` is ``[N, 4]`` float32 on ``device``: linear RGB and opacity per ``unit_distance`` (uncorrected).
    Outside ``[hu_min, hu_max]`` (the TF's outermost points) the values are clamped, as the TF itself does.
    """

    table: object
    hu_min: float
    hu_max: float
    unit_distance: float
    tf: TransferFunction
    point64: object = None  # [N, 4] float64: extinction (1/mm) and RGB at the table's HU values
    cumulative64: object = None  # [N] float64: running integral over HU of the extinction (trapezoid rule)
    depth32: object = None  # float32 cumulative and point extinction [N, 1] for segment_depth (made on first use)

    def __post_init__(self) -> None:
        import torch

        table = self.table.to(torch.float64)
        extinction = -torch.log1p(-table[:, 3].clamp(0.0, MAX_OPACITY)) / self.unit_distance
        self.point64 = torch.cat([extinction[:, None], table[:, :3]], dim=1).contiguous()
        dh = (self.hu_max - self.hu_min) / (self.table.shape[0] - 1)
        steps = 0.5 * (extinction[1:] + extinction[:-1]) * dh
        self.cumulative64 = torch.cat([torch.zeros_like(extinction[:1]), torch.cumsum(steps, 0)]).contiguous()

    @classmethod
    def build(cls, tf: TransferFunction, device="cpu", size: int = TABLE_SIZE) -> "TFTable":
        """Sample ``tf`` (colour and scalar opacity) at ``size`` evenly spaced HU values on ``device``."""
        import torch

        points = np.concatenate([tf.color_points[:, 0], tf.opacity_points[:, 0]])
        lo, hi = float(points.min()), float(points.max())
        if hi - lo < 1e-3:
            hi = lo + 1.0
        hu = torch.linspace(lo, hi, size, dtype=torch.float64).to(torch.float32).to(device)
        table = torch.cat([tf.color(hu), tf.opacity(hu)[:, None]], dim=1).contiguous()
        return cls(table, lo, hi, tf.unit_distance, tf)

    @property
    def size(self) -> int:
        return int(self.table.shape[0])

    def lookup(self, hu, table=None):
        """Interpolate ``table`` (default :attr:`table`, any ``[N, C]`` sampled on the same HU grid) at ``hu``.

        ``hu`` is any-shaped; returns ``hu.shape + (C,)``.
        """
        import torch

        table = self.table if table is None else table
        n = table.shape[0]
        x = ((hu.reshape(-1) - self.hu_min) * ((n - 1) / (self.hu_max - self.hu_min))).clamp(0.0, n - 1.0)
        i0 = x.to(torch.int64).clamp(max=n - 2)
        frac = (x - i0.to(x.dtype))[:, None]
        lo = table.index_select(0, i0)
        hi = table.index_select(0, i0 + 1)
        return (lo + (hi - lo) * frac).reshape(hu.shape + (table.shape[1],))

    def step_table(self, step_mm: float):
        """``[N, 4]`` table of RGB and alpha corrected for samples ``step_mm`` apart (``tf.evaluate`` semantics)."""
        import torch

        _, alpha = self.tf.evaluate(self._hu_grid(), step_mm)
        return torch.cat([self.table[:, :3], alpha[:, None]], dim=1).contiguous()

    def _hu_grid(self):
        import torch

        return torch.linspace(self.hu_min, self.hu_max, self.size, dtype=torch.float64).to(torch.float32).to(
            self.table.device)

    def preintegrated(self, hu_front, hu_back, length_mm: float):
        """Pre-integrated classification of ray segments ``length_mm`` long whose HU goes linearly from
        ``hu_front`` to ``hu_back`` (1D tensors): ``(rgb [M, 3], alpha [M], fraction [M], hu [M])``.

        ``alpha = 1 - exp(-D)`` with ``D`` the integral of the extinction ``-ln(1 - a(h)) / unit_distance`` along
        the segment (pre-integration, Engel et al. 2001, from cumulative integrals over HU in float64): a segment
        crossing a thin opaque HU range cannot miss it, which removes the wood-grain rings of point sampling.
        ``fraction`` (0 at the front, 1 at the back) and ``hu`` locate the segment's emission median, where the
        optical depth from the front reaches ``-ln((1 + exp(-D)) / 2)``: half of the light the segment sends
        towards the front comes from before it. Colour (``rgb``) and lighting are evaluated there: at the middle
        of a faint segment, just under the surface of an opaque one. For a constant HU this is exactly
        ``tf.evaluate`` (``alpha = 1 - (1 - a) ** (length / unit_distance)``).
        """
        import torch

        n = self.size
        scale = (n - 1) / (self.hu_max - self.hu_min)
        front = hu_front.to(torch.float64)
        back = hu_back.to(torch.float64)
        width = back - front
        wide = width.abs() > 2.0 / scale
        safe_width = torch.where(wide, width, torch.ones_like(width))
        cum_front = self.lookup(front, self.cumulative64[:, None])[:, 0]
        cum_back = self.lookup(back, self.cumulative64[:, None])[:, 0]
        midpoint = self.lookup(0.5 * (front + back), self.point64[:, :1])[:, 0]
        depth = torch.where(wide, (cum_back - cum_front) / safe_width, midpoint).clamp(min=0.0) * length_mm
        median_depth = -torch.log(0.5 * (1.0 + torch.exp(-depth)))
        share = torch.where(depth > 1e-9, median_depth / torch.where(depth > 1e-9, depth, torch.ones_like(depth)),
                            torch.full_like(depth, 0.5))  # fraction of D reached at the median
        target = cum_front + share * (cum_back - cum_front)
        increasing = width >= 0
        # increasing HU: the first table entry whose cumulative reaches the target; decreasing: the one after the
        # last entry at or below it (the median is the point of the segment nearest its front)
        index = torch.where(increasing, torch.searchsorted(self.cumulative64, target),
                            torch.searchsorted(self.cumulative64, target, right=True)).clamp(1, n - 1)
        lo_c, hi_c = self.cumulative64[index - 1], self.cumulative64[index]
        t = torch.where(hi_c > lo_c, (target - lo_c) / torch.where(hi_c > lo_c, hi_c - lo_c, torch.ones_like(hi_c)),
                        torch.where(increasing, torch.zeros_like(hi_c), torch.ones_like(hi_c)))
        hu_median = self.hu_min + (index.to(torch.float64) - 1.0 + t.clamp(0.0, 1.0)) / scale
        fraction = torch.where(wide & (depth > 1e-9), ((hu_median - front) / safe_width).clamp(0.0, 1.0), share)
        hu_here = front + fraction * width
        colour = self.lookup(hu_here, self.point64[:, 1:4])
        alpha = 1.0 - torch.exp(-depth)
        return (colour.clamp(0.0, 1.0).to(torch.float32), alpha.to(torch.float32), fraction.to(torch.float32),
                hu_here.to(torch.float32))

    def segment_depth(self, hu_front, hu_back, length_mm: float):
        """Optical depth of segments ``length_mm`` long whose HU goes linearly from ``hu_front`` to ``hu_back``
        (same-shaped float32 tensors): the integral of the extinction along the segment, as in
        :meth:`preintegrated` (float32 is accurate enough here: segments narrower than two table entries use the
        midpoint extinction)."""
        import torch

        if self.depth32 is None:
            self.depth32 = (self.cumulative64[:, None].to(torch.float32), self.point64[:, 0:1].to(torch.float32))
        cumulative, point = self.depth32
        width = hu_back - hu_front
        wide = width.abs() > 2.0 * (self.hu_max - self.hu_min) / (self.size - 1)
        integral = self.lookup(hu_back, cumulative)[..., 0] - self.lookup(hu_front, cumulative)[..., 0]
        mean = torch.where(wide, integral / torch.where(wide, width, torch.ones_like(width)),
                           self.lookup(0.5 * (hu_front + hu_back), point)[..., 0])
        return mean.clamp(min=0.0) * length_mm

    def visible_between(self, hu_lo, hu_hi):
        """Boolean tensor: does the TF have opacity > 0 anywhere in ``[hu_lo, hu_hi]`` (same-shaped tensors)?

        Conservative: the interval is widened to whole table entries.
        """
        import torch

        n = self.size
        positive = (self.table[:, 3] > 0).to(torch.int64)
        count = torch.cat([positive.new_zeros(1), torch.cumsum(positive, 0)])  # count[m] = positives in [0, m)
        scale = (n - 1) / (self.hu_max - self.hu_min)
        lo = ((hu_lo - self.hu_min) * scale).floor().clamp(0, n - 1).to(torch.int64)
        hi = ((hu_hi - self.hu_min) * scale).ceil().clamp(0, n - 1).to(torch.int64)
        return (count[hi + 1] - count[lo]) > 0


# ---- geometry helpers ------------------------------------------------------------------------------------------
def hu_tensor(volume: Volume, device="cpu"):
    """The volume's HU array as a float32 torch tensor ``[K, J, I]`` on ``device``."""
    import torch

    return torch.from_numpy(volume.array).to(device)


def gradient_volume(hu, ijk_to_ras: np.ndarray, smooth: bool = False):
    """Gradient of the HU field in RAS, HU/mm: ``[3, K, J, I]`` (components R, A, S) from ``hu`` ``[K, J, I]``.

    Central differences along the voxel axes (one-sided at the borders, like VTK's ray caster), mapped to RAS
    with the inverse transpose of the voxel axes matrix, so oblique and anisotropic grids give the true gradient.
    ``smooth`` first filters the HU with ``[1, 2, 1] / 4`` along every axis (a 3x3x3 binomial kernel; with the
    central difference this is the Sobel-like operator of Zucker and Hummel), which removes the terracing of
    normals on sharp edges sampled by coarse voxels, at the cost of slightly rounder edges.
    """
    import torch

    if smooth:
        for dim in range(3):
            padded = torch.cat([hu.narrow(dim, 0, 1), hu, hu.narrow(dim, hu.shape[dim] - 1, 1)], dim=dim)
            n = hu.shape[dim]
            hu = 0.25 * (padded.narrow(dim, 0, n) + padded.narrow(dim, 2, n)) + 0.5 * hu
    d_dk, d_dj, d_di = torch.gradient(hu, dim=(0, 1, 2))
    m = torch.as_tensor(np.linalg.inv(ijk_to_ras[:3, :3]).T, dtype=torch.float32, device=hu.device)
    stacked = torch.stack([d_di, d_dj, d_dk])  # derivatives per voxel step along i, j, k
    return torch.einsum("rc,ckji->rkji", m, stacked).contiguous()


def _unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm < 1e-9:
        raise RenderFMError(f"light direction must be a non-zero RAS vector, got {vector!r}")
    return v / norm


# ---- the lighting rig --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LightingRig:
    """World-fixed lighting of the cinematic mode (all directions in RAS; intensities are linear multipliers).

    ``key_direction``: unit vector from the scene towards the key light (default: from the patient's right,
    anterior and superior, like a studio key light above and in front). ``key_intensity``/``key_color``: its
    strength and linear RGB colour. ``sky_intensity``/``sky_color``: ambient sky light, attenuated by ambient
    occlusion within ``ao_radius_mm``. ``scatter_strength``/``scatter_radius_mm``: the multiple-scattering
    approximation. ``shadow_softness_mm``: standard deviation of the shadow penumbra 100 mm behind an occluder
    (grows with the square root of the distance). ``phase_g``: Henyey-Greenstein anisotropy of volumetric
    scattering (0 isotropic, > 0 forward). ``surface_gradient``: gradient magnitude (HU/mm) at which a sample is
    63 % surface-like (BRDF) and 37 % volume-like (phase function); the weight is ``1 - exp(-|grad| / value)``.
    ``specular_scale`` multiplies the TF's specular coefficient. ``exposure``: stops applied before the filmic
    tone curve.
    """

    key_direction: tuple[float, float, float] = (0.35, 0.55, 0.75)
    key_intensity: float = 2.2
    key_color: tuple[float, float, float] = (1.0, 0.97, 0.92)
    sky_intensity: float = 0.7
    sky_color: tuple[float, float, float] = (0.9, 0.95, 1.0)
    ao_radius_mm: float = 25.0
    scatter_strength: float = 0.35
    scatter_radius_mm: float = 8.0
    shadow_softness_mm: float = 3.0
    phase_g: float = 0.2
    surface_gradient: float = 60.0
    specular_scale: float = 1.0
    exposure: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_direction", tuple(float(v) for v in _unit(self.key_direction)))
        for name in ("key_color", "sky_color"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if value.shape != (3,) or not np.isfinite(value).all() or (value < 0).any():
                raise RenderFMError(f"lighting {name} must be 3 non-negative numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        for name in ("key_intensity", "sky_intensity", "scatter_strength", "shadow_softness_mm", "specular_scale"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise RenderFMError(f"lighting {name} must be a finite number >= 0, got {value}")
            object.__setattr__(self, name, value)
        for name in ("ao_radius_mm", "scatter_radius_mm", "surface_gradient"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value <= 0:
                raise RenderFMError(f"lighting {name} must be a finite number > 0, got {value}")
            object.__setattr__(self, name, value)
        if not -0.95 <= float(self.phase_g) <= 0.95:
            raise RenderFMError(f"lighting phase_g must be in [-0.95, 0.95], got {self.phase_g}")
        if not np.isfinite(float(self.exposure)):
            raise RenderFMError(f"lighting exposure must be finite, got {self.exposure}")

    def with_key_direction(self, direction) -> "LightingRig":
        """A copy with another key-light direction (RAS, towards the light)."""
        return replace(self, key_direction=tuple(_unit(direction)))

    def to_dict(self) -> dict:
        """JSON-ready parameters."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


#: The 14 sky directions (6 axes and 8 diagonals of the cube, unit RAS vectors).
SKY_DIRECTIONS = np.array([d for d in np.ndindex(3, 3, 3) if sum(abs(c - 1) for c in d) in (1, 3)],
                          dtype=np.float64) - 1.0
SKY_DIRECTIONS /= np.linalg.norm(SKY_DIRECTIONS, axis=1, keepdims=True)
#: Weight of each sky direction: light from superior counts three times as much as light from inferior.
SKY_WEIGHTS = 1.0 + 0.5 * SKY_DIRECTIONS[:, 2]


# ---- precomputed illumination ------------------------------------------------------------------------------
@dataclass
class Illumination:
    """View-independent illumination on the working grid, reusable for every view of one volume and TF.

    ``fields`` is ``[8, K, J, I]`` float32: the HU gradient (3 channels, HU/mm in RAS), the key light's optical
    depth ``-ln T_key`` and the sky's ``-ln sky`` (>= 0; stored as optical depths because these grow about linearly
    below a surface, so trilinear interpolation between coarse voxels stays accurate where the transmittance
    itself falls off exponentially within a voxel), and the multiple-scattering light (RGB, in units of the key
    light's intensity). The renderer samples them trilinearly; they are stored channels-last (channel stride 1).
    ``shape`` is ``(K, J, I)``; ``seconds`` the time it took to compute.
    """

    fields: object
    lighting: LightingRig
    shape: tuple[int, int, int]
    tf_name: str
    seconds: float = 0.0

    @property
    def device(self):
        return self.fields.device

    @property
    def gradient(self):
        """``[3, K, J, I]`` HU gradient (HU/mm, RAS)."""
        return self.fields[0:3]

    @property
    def key_transmittance(self):
        """``[K, J, I]`` key-light transmittance ``T_key`` in [0, 1]."""
        import torch

        return torch.exp(-self.fields[3])

    @property
    def sky(self):
        """``[K, J, I]`` sky visibility (ambient occlusion) in [0, 1]."""
        import torch

        return torch.exp(-self.fields[4])

    @property
    def scatter(self):
        """``[3, K, J, I]`` multiple-scattering light (RGB)."""
        return self.fields[5:8]


#: Smallest transmittance stored (as the largest optical depth, about 13.8).
MIN_TRANSMITTANCE = 1e-6


def extinction_volume(hu, factor, table: TFTable):
    """Per-voxel extinction coefficient (1/mm) ``[K, J, I]``: ``-ln(1 - a) / unit_distance``, with ``a`` the
    scalar opacity times the gradient-opacity ``factor`` ``[K, J, I]`` (``None``: no gradient opacity), clamped
    to :data:`MAX_OPACITY`."""
    import torch

    a = table.lookup(hu, table.table[:, 3:4])[..., 0]
    if factor is not None:
        a = a * factor
    return -torch.log1p(-a.clamp(0.0, MAX_OPACITY)) / table.unit_distance


def compute_illumination(volume: Volume, tf: TransferFunction, lighting: LightingRig | None = None,
                         device="cpu") -> Illumination:
    """Precompute gradients, key-light transmittance, sky visibility and multiple scattering for ``volume``.

    ``volume`` must be the working grid the renderer will sample (see :func:`RenderFMLib.volume.working_volume`).
    Cost: one slice sweep per light direction (15 in all) plus a low-resolution blur; about 2 s for 256^3 voxels on
    two CPU cores. Deterministic.
    """
    import time

    import torch

    start = time.perf_counter()
    lighting = lighting or LightingRig()
    with torch.no_grad():
        hu = hu_tensor(volume, device)
        gradient = gradient_volume(hu, volume.ijk_to_ras, smooth=True)
        table = TFTable.build(tf, device)
        factor = tf.gradient_factor(torch.linalg.vector_norm(gradient, dim=0)) if tf.has_gradient_opacity else None
        sigma = extinction_volume(hu, factor, table)
        if factor is None:
            factor = torch.ones_like(hu)
        softness = lighting.shadow_softness_mm
        with _one_cpu_thread(hu.device):
            key = sweep_transmittance(torch.stack([hu, factor]), [float(hu.min()), 0.0], preintegrated_depth(table),
                                      volume.ijk_to_ras, lighting.key_direction,
                                      blur_variance_mm2_per_mm=softness * softness / 100.0)
            sky = sky_visibility(sigma, volume, lighting.ao_radius_mm)
        albedo = table.lookup(hu, table.table[:, :3]).permute(3, 0, 1, 2)
        scatter = multiple_scattering(sigma, albedo, key, volume.spacing, tf.unit_distance,
                                      lighting.scatter_radius_mm)
        depths = -torch.log(torch.stack([key, sky]).clamp(min=MIN_TRANSMITTANCE))
        # channels last: the renderer reads all eight at scattered points, one cache line per voxel
        fields = torch.cat([gradient, depths, scatter]).permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)
    return Illumination(fields=fields, lighting=lighting, shape=volume.shape, tf_name=tf.name,
                        seconds=time.perf_counter() - start)


@contextmanager
def _one_cpu_thread(device):
    """Run torch's CPU operations on one thread inside the block (restored afterwards). The slice sweeps are long
    sequences of small operations, for which a second thread costs more in synchronisation than it gains; on a
    busy machine (threads descheduled) two threads made them ten to thirty times slower than one (measured)."""
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sweep_transmittance(inputs, fill, segment_depth, ijk_to_ras: np.ndarray, direction,
                        falloff_mm: float | None = None, blur_variance_mm2_per_mm: float = 0.0):
    """Transmittance ``[K, J, I]`` of light arriving from ``direction`` (RAS, towards the light) at voxel centres.

    Light travels slice by slice along the voxel axis closest to its direction. Each slice of the per-voxel
    ``inputs`` (``[C, K, J, I]``; positions outside the volume take the per-channel ``fill`` values) is resampled
    once into a sheared frame that moves with the light (shear-warp; the frame follows the light by whole voxels,
    exactly), so every light ray keeps its lateral index from slice to slice and its optical depth accumulates
    without the numerical diffusion that re-interpolating a travelling transmittance at every slice would cause
    (it blurs shadows by several voxels). Between consecutive slices the light is attenuated by
    ``exp(-segment_depth(front, back, length_mm))`` (``front``/``back``: the inputs at the two ends, ``[C, U, V]``;
    returns ``[U, V]``); light enters unattenuated from outside the volume. The transmittance is resampled back to
    the voxel centres once. ``falloff_mm`` (optional) forgets optical depth exponentially with distance (local
    occlusion, for ambient occlusion); ``blur_variance_mm2_per_mm`` blurs the transmittance across the light by
    that variance per mm travelled (soft shadows).
    """
    import torch
    import torch.nn.functional as F

    m = ijk_to_ras[:3, :3]
    toward_source = np.linalg.solve(m, -_unit(direction))  # propagation direction of the light, voxel units/mm
    axis = int(np.argmax(np.abs(toward_source)))  # voxel axis 0 = i, 1 = j, 2 = k (tensor dim 2 - axis)
    delta = toward_source / abs(toward_source[axis])  # one voxel along `axis` per slice
    length_mm = float(np.linalg.norm(m @ delta))
    dim = 2 - axis
    dim_u, dim_v = [d for d in (0, 1, 2) if d != dim]  # the slice's tensor dims, in tensor order
    axis_u, axis_v = 2 - dim_u, 2 - dim_v
    x = inputs.permute(1 + dim, 0, 1 + dim_u, 1 + dim_v)  # [N, C, U, V]
    if delta[axis] < 0:
        x = x.flip(0)
    x = x.contiguous()
    n, channels, u, v = x.shape
    du, dv = float(delta[axis_u]), float(delta[axis_v])
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(channels, 1, 1)
    ones = torch.ones((1, 1, 1), dtype=x.dtype, device=x.device)
    decay = math.exp(-length_mm / falloff_mm) if falloff_mm else 1.0
    spacing = np.linalg.norm(m, axis=0)
    blur_u, blur_v = (min(0.25, 0.5 * blur_variance_mm2_per_mm * length_mm / float(spacing[a]) ** 2)
                      for a in (axis_u, axis_v))
    # Light rays are lines u = q + s * du (q fixed). At slice s the state holds rays q = p - 1 - floor(s * du)
    # for p in [0, U + 2), i.e. entry p sits at u = p - 1 + frac(s * du): a window that follows the light by whole
    # voxels (exact re-indexing), while the fractional part only enters when inputs are read and results written.
    out = torch.empty((n, u, v), dtype=x.dtype, device=x.device)
    light = torch.ones((u + 2, v + 2), dtype=x.dtype, device=x.device)
    previous = None
    whole_prev = (0, 0)
    for index in range(n):
        whole = (math.floor(index * du), math.floor(index * dv))
        frac_u, frac_v = index * du - whole[0], index * dv - whole[1]
        current = _translate(x[index], frac_u - 1.0, frac_v - 1.0, u + 2, v + 2, fill)
        if previous is not None:
            step_u, step_v = whole[0] - whole_prev[0], whole[1] - whole_prev[1]
            light = _translate(light[None], -step_u, -step_v, u + 2, v + 2, ones)[0]
            front = _translate(previous, -step_u, -step_v, u + 2, v + 2, fill)
            if decay != 1.0:
                light = light.pow(decay)
            light = light * torch.exp(-segment_depth(front, current, length_mm))
            if blur_u > 0 or blur_v > 0:
                p = F.pad(light[None, None], (1, 1, 1, 1), value=1.0)[0, 0]
                light = blur_u * (p[:-2, 1:-1] + p[2:, 1:-1]) + (1 - 2 * blur_u) * p[1:-1, 1:-1]
                p = F.pad(light[None, None], (1, 1, 1, 1), value=1.0)[0, 0]
                light = blur_v * (p[1:-1, :-2] + p[1:-1, 2:]) + (1 - 2 * blur_v) * p[1:-1, 1:-1]
        previous, whole_prev = current, whole
        out[index] = _translate(light[None], 1.0 - frac_u, 1.0 - frac_v, u, v, ones)[0]
    if delta[axis] < 0:
        out = out.flip(0)
    inverse = [[dim, dim_u, dim_v].index(d) for d in range(3)]
    return out.permute(*inverse).contiguous()


def _translate(image, offset_u: float, offset_v: float, size_u: int, size_v: int, fill):
    """``out[c, p, q] = image[c, p + offset_u, q + offset_v]`` (bilinear) for ``p < size_u``, ``q < size_v``;
    positions outside ``image`` (``[C, U, V]``) take ``fill`` (``[C, 1, 1]``). Offsets must keep the output within
    three voxels of the image."""
    import torch

    channels, u, v = image.shape
    margin = 3
    padded = fill.expand(channels, u + 2 * margin, v + 2 * margin).clone()
    padded[:, margin:margin + u, margin:margin + v] = image
    whole_u, whole_v = math.floor(offset_u), math.floor(offset_v)
    frac_u, frac_v = offset_u - whole_u, offset_v - whole_v
    out = None
    for corner_u, corner_v in ((0, 0), (1, 0), (0, 1), (1, 1)):
        weight = (frac_u if corner_u else 1.0 - frac_u) * (frac_v if corner_v else 1.0 - frac_v)
        if weight == 0.0:
            continue
        a, b = margin + whole_u + corner_u, margin + whole_v + corner_v
        term = padded[:, a:a + size_u, b:b + size_v]
        out = term * weight if out is None else out + term * weight
    return out if out is not None else torch.zeros((channels, size_u, size_v), dtype=image.dtype,
                                                   device=image.device)


def trapezoid_depth(front, back, length_mm: float):
    """Optical depth of a step between voxels of extinction ``front[0]`` and ``back[0]`` (1/mm): trapezoid rule."""
    return (0.5 * length_mm) * (front[0] + back[0])


def preintegrated_depth(table: TFTable):
    """A ``segment_depth`` for :func:`sweep_transmittance` with inputs ``[HU, gradient-opacity factor]``: the
    pre-integrated optical depth of the HU ramp between the two voxels (so the light's attenuation varies smoothly
    with the position of a surface between voxel centres) times the mean gradient-opacity factor."""

    def depth(front, back, length_mm: float):
        return table.segment_depth(front[0], back[0], length_mm) * (0.5 * (front[1] + back[1]))

    return depth


def sky_visibility(sigma, volume: Volume, radius_mm: float):
    """Sky visibility ``[K, J, I]``: the :data:`SKY_WEIGHTS`-weighted mean over :data:`SKY_DIRECTIONS` of the
    transmittance towards each direction, forgetting occluders beyond about ``radius_mm``. Ambient occlusion varies
    on the scale of its radius, so it is computed on a grid coarsened by ``round(radius / (8 * spacing))`` (at
    least 1: eight or more voxels per radius) from the mean extinction of each block, and interpolated back."""
    import torch
    import torch.nn.functional as F

    factor = max(1, int(round(radius_mm / (8.0 * float(volume.spacing.max())))))
    coarse = F.avg_pool3d(sigma[None, None], factor, stride=factor, ceil_mode=True)[0, 0] if factor > 1 else sigma
    geometry = volume.ijk_to_ras.copy()
    geometry[:3, :3] = volume.ijk_to_ras[:3, :3] * factor
    sky = torch.zeros_like(coarse)
    for direction, weight in zip(SKY_DIRECTIONS, SKY_WEIGHTS, strict=True):
        sky += float(weight) * sweep_transmittance(coarse[None], [0.0], trapezoid_depth, geometry, direction,
                                                   falloff_mm=radius_mm)
    sky /= float(SKY_WEIGHTS.sum())
    if factor > 1:
        sky = F.interpolate(sky[None, None], size=tuple(sigma.shape), mode="trilinear", align_corners=False)[0, 0]
    return sky.contiguous()


def multiple_scattering(sigma, albedo, key, spacing_ijk: np.ndarray, unit_distance: float, radius_mm: float):
    """Multiple-scattering light ``[3, K, J, I]``: Gaussian low-pass (std ``radius_mm``) of
    ``density * albedo * key`` divided by the low-pass of ``density``, where density is the per-unit-distance
    opacity ``1 - exp(-sigma * unit_distance)``. Computed on a grid coarsened to about ``radius_mm`` and
    interpolated back (the result is smooth at that scale)."""
    import torch
    import torch.nn.functional as F

    density = 1.0 - torch.exp(-sigma * unit_distance)
    stack = torch.cat([density[None] * albedo * key[None], density[None]])[None]  # [1, 4, K, J, I]
    shape = tuple(int(s) for s in sigma.shape)
    factors = [max(1, int(radius_mm / float(spacing_ijk[2 - d]))) for d in range(3)]  # per tensor dim
    coarse = F.avg_pool3d(stack, kernel_size=factors, stride=factors, ceil_mode=True) if max(factors) > 1 else stack
    for d in range(3):
        sigma_vox = radius_mm / (float(spacing_ijk[2 - d]) * factors[d])
        half = max(1, int(math.ceil(3.0 * sigma_vox)))
        taps = torch.arange(-half, half + 1, dtype=coarse.dtype, device=coarse.device)
        kernel = torch.exp(-0.5 * (taps / sigma_vox) ** 2)
        kernel = kernel / kernel.sum()
        shape_k = [1, 1, 1]
        shape_k[d] = kernel.numel()
        weight = kernel.reshape(1, 1, *shape_k).repeat(4, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - d)] = pad[2 * (2 - d) + 1] = half
        coarse = F.conv3d(F.pad(coarse, pad, mode="replicate"), weight, groups=4)
    smooth = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0]
    return (smooth[:3] / smooth[3:4].clamp(min=1e-4)).clamp(0.0, 1.0).contiguous()


def baked_radiance(volume: Volume, tf: TransferFunction, illumination: Illumination) -> np.ndarray:
    """View-independent radiance per voxel, ``[K, J, I, 3]`` float32 linear RGB (scene-linear, before exposure and
    tone mapping), for initialising Gaussians.

    Exactly the cinematic renderer's per-sample radiance (:func:`RenderFMLib.reference.cinematic_radiance`)
    evaluated at the voxel centre with its view-dependent parts removed: no specular term, isotropic phase function
    (``phase_g`` taken as 0) and the outward normal ``-grad/|grad|`` not flipped towards the viewer::

        L = c * (I_key * key_color * T_key * (w * max(n.l, 0) + (1 - w)) + I_sky * sky_color * sky
                 + scatter_strength * I_key * key_color * scatter)

    with ``w = 1 - exp(-|grad| / surface_gradient)``, the light fields ``T_key``, ``sky``, ``scatter`` read at
    :func:`light_offset` from the voxel, and ``c`` and the attenuation of ``T_key`` and ``sky`` taken as the
    renderer takes them for a ray segment from that read point to the voxel centre: at the segment's emission
    median (:meth:`TFTable.preintegrated`; attenuation weighted by ``1 - w`` as in :func:`local_light_depth`), so
    an opaque voxel on a surface gets the light of its outer layer, not the darkness at its centre. Voxels the TF
    leaves transparent read the fields in place (their radiance never shows). A cinematic pixel is then
    ``tone_map(sum_i T_i alpha_i L_i, alpha, exposure)`` (:func:`RenderFMLib.tonemap.tone_map`), where ``T_i``,
    ``alpha_i`` are the usual front-to-back transmittance and opacity-corrected alpha of the samples.
    """
    import torch

    from .reference import cinematic_radiance

    if tuple(illumination.shape) != volume.shape:
        raise RenderFMError(f"illumination was computed for a {illumination.shape} grid, the volume is "
                            f"{volume.shape}; compute it on this working grid")
    device = illumination.device
    with torch.no_grad():
        hu = hu_tensor(volume, device).reshape(-1)
        table = TFTable.build(tf, device)
        colour = table.lookup(hu, table.table[:, :3])
        fields = illumination.fields.reshape(8, -1).T.clone()
        visible = torch.nonzero(table.lookup(hu, table.table[:, 3:4])[:, 0] > 0).squeeze(1)
        bias_mm = light_bias_mm(volume)
        ras_to_ijk = torch.as_tensor(volume.ras_to_ijk[:3, :3], dtype=fields.dtype, device=device)
        for part in torch.split(visible, 1 << 20):
            k, j, i = torch.unravel_index(part, volume.shape)
            ijk = torch.stack([i, j, k], dim=1).to(torch.float32)
            offset = light_offset(fields[part, 0:3], illumination.lighting, volume)
            there = ijk + ras_to_ijk_vectors(offset, ras_to_ijk)
            fields[part, 3:8] = sample_fields(illumination.fields[3:8], there)
            hu_there = sample_fields(hu.reshape(1, *volume.shape), there)[:, 0]
            # light the voxel where a ray arriving from the read point would: at the emission median of that
            # segment (the outer layer of an opaque voxel, about the middle of a faint one)
            colour[part], _, fraction, hu_median = table.preintegrated(hu_there, hu[part], bias_mm)
            magnitude = torch.sqrt((fields[part, 0:3] ** 2).sum(1))
            volume_like = torch.exp(-magnitude / illumination.lighting.surface_gradient)
            local = table.segment_depth(hu_median, hu_there, 1.0) * ((1.0 - fraction) * bias_mm) * volume_like
            fields[part, 3:5] += local[:, None]
        radiance = cinematic_radiance(colour, fields, tf, illumination.lighting, view_dir=None)
    return radiance.reshape(*volume.shape, 3).cpu().numpy().astype(np.float32)


def light_bias_mm(volume: Volume) -> float:
    """Distance (mm) from a sample to where its light fields are read: :data:`LIGHT_BIAS_VOXELS` largest spacings."""
    return LIGHT_BIAS_VOXELS * float(volume.spacing.max())


def light_offset(gradient, lighting: LightingRig, volume: Volume):
    """Where light fields are read for samples with HU gradient ``gradient`` ``[M, 3]`` (RAS HU/mm): an offset
    ``[M, 3]`` (RAS mm) of :data:`LIGHT_BIAS_VOXELS` voxels along ``w * n + (1 - w) * l`` (normalised), with ``n``
    the outward normal, ``l`` the key direction and ``w`` the surface weight (see :class:`LightingRig`)."""
    import torch

    magnitude = torch.sqrt((gradient * gradient).sum(1, keepdim=True))
    normal = -gradient / magnitude.clamp(min=MIN_GRADIENT)
    surface = 1.0 - torch.exp(-magnitude / lighting.surface_gradient)
    light = torch.tensor(lighting.key_direction, dtype=gradient.dtype, device=gradient.device)
    direction = surface * normal + (1.0 - surface) * light
    length = torch.sqrt((direction * direction).sum(1, keepdim=True)).clamp(min=1e-6)
    return direction * (light_bias_mm(volume) / length)


def local_light_depth(table: TFTable, hu_here, hu_there, gradient, lighting: LightingRig, volume: Volume):
    """Optical depth ``[M]`` between samples and the points where their light is read (:func:`light_offset`),
    from the HU at both ends (pre-integrated, as a straight HU ramp), weighted by ``1 - w`` (``w`` the surface
    weight from ``gradient`` ``[M, 3]``). The light reaching a volume-like sample is the light field at the read
    point attenuated by this depth: unlike the field itself, which falls off within a voxel or two below a
    surface and is only known at voxel centres, it varies smoothly with the sample's depth, so lit translucent
    layers show no voxel terraces. Surface-like samples are shaded with the BRDF and the light arriving at the
    surface (read outside it), without this attenuation."""
    import torch

    magnitude = torch.sqrt((gradient * gradient).sum(1))
    volume_like = torch.exp(-magnitude / lighting.surface_gradient)
    return table.segment_depth(hu_here, hu_there, light_bias_mm(volume)) * volume_like


def ras_to_ijk_vectors(vectors, ras_to_ijk):
    """RAS displacement vectors ``[M, 3]`` (mm) as voxel-index displacements ``[M, 3]`` (order i, j, k);
    ``ras_to_ijk``: the ``[3, 3]`` tensor ``volume.ras_to_ijk[:3, :3]`` (made once, outside loops)."""
    m = ras_to_ijk
    return vectors[:, 0:1] * m[:, 0] + vectors[:, 1:2] * m[:, 1] + vectors[:, 2:3] * m[:, 2]


def sample_grid(volume5d, grid):
    """Trilinear samples ``[M, C]`` of ``volume5d`` ``[1, C, K, J, I]`` at grid_sample coordinates ``grid``
    ``[M, 3]`` (order i, j, k, each normalised to [-1, 1] over the voxel centres; clamped to the grid)."""
    import torch.nn.functional as F

    out = F.grid_sample(volume5d, grid.reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.reshape(volume5d.shape[1], -1).T


def sample_fields(fields, ijk):
    """Trilinear samples ``[M, C]`` of ``fields`` ``[C, K, J, I]`` at continuous voxel indices ``ijk`` ``[M, 3]``
    (order i, j, k; clamped to the grid)."""
    import torch

    size = torch.tensor(fields.shape[1:][::-1], dtype=fields.dtype, device=fields.device)
    return sample_grid(fields[None], ijk * (2.0 / (size - 1.0)) - 1.0)
