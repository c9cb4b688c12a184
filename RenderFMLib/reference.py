"""The photoreal reference renderer: ray marching through a CT volume on the working grid, on CPU or CUDA.

:func:`render_reference` casts one ray per pixel (:meth:`RenderFMLib.camera.Camera.pixel_rays`), clips it to the
box of voxel centres (in voxel coordinates, so oblique grids are exact), skips empty space with a brick occupancy
grid, samples the HU trilinearly (``torch.nn.functional.grid_sample``) every ``step_mm`` (sample ``n`` of every ray
lies ``n * step_mm`` from the camera, so images do not depend on how rays are grouped), classifies samples through a
4096-entry TF table with opacity correction for the step (:meth:`RenderFMLib.transfer.TransferFunction.evaluate`
semantics) and composites front to back, stopping rays whose opacity exceeds :data:`EARLY_STOP_ALPHA`. Shading
inputs are sampled only where a sample is not transparent. Work is split into chunks of rays and segments of
samples, so memory stays bounded; there is no randomness (bit-for-bit repeatable on one device, whatever
``chunk_rays``). The same code runs on CPU and CUDA.

Modes:

* ``"emission-absorption"``: colour times alpha, no lighting.
* ``"shaded"``: VTK's CPU ray caster (``vtkFixedPointVolumeRayCastMapper``) lit as
  :func:`RenderFMLib.vtk_raycast.render_vtk` lights it, reproduced from VTK's source (``vtkEncodedGradientShader``,
  ``vtkFixedPointVolumeRayCastHelper``): one white headlight of intensity 1 with a white ambient colour, along the
  camera's direction of projection ``v`` (directional: the same for every pixel), two-sided lighting, normal
  ``n = -grad / |grad|`` from central differences on the voxels. Per voxel, ``D = ambient + diffuse * |n.v|`` and
  ``S = specular * |n.v| ** specular_power`` (``D = ambient``, ``S = 0`` where the gradient vanishes); VTK
  interpolates ``D`` and ``S`` (not normals) trilinearly to the sample and shades the premultiplied sample as
  ``alpha * (c * D + S)``. Like VTK, a TF whose ``shade`` flag is off is not shaded (``D = 1``, ``S = 0``).
* ``"cinematic"`` (default): world-fixed lighting from :class:`~RenderFMLib.illumination.LightingRig` with
  precomputed :class:`~RenderFMLib.illumination.Illumination` (key-light shadows, sky light with ambient occlusion,
  multiple scattering), a hybrid of a surface BRDF (Lambert + Blinn-Phong) and a Henyey-Greenstein phase function
  weighted by the gradient magnitude (:func:`cinematic_radiance`), then exposure and the ACES filmic curve
  (:mod:`RenderFMLib.tonemap`). The cinematic image is therefore tone-mapped, display-referred linear RGB.
  Segments between samples are classified by pre-integration (``TFTable.preintegrated`` in
  :mod:`RenderFMLib.illumination`) and lit at their emission median, which removes the wood-grain rings of point
  sampling; light fields are read slightly outside surfaces (:func:`~RenderFMLib.illumination.light_offset`).
  The gradient for shading is taken from the HU smoothed by a 3x3x3 binomial kernel (VTK's plain central
  differences show voxel terraces on coarse grids).

Every mode returns ``(rgb, alpha)``: numpy float32 ``[H, W, 3]`` premultiplied linear RGB in [0, 1] and
``[H, W, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .errors import RenderFMError, VolumeError
from .illumination import (
    MIN_GRADIENT,
    Illumination,
    LightingRig,
    TFTable,
    compute_illumination,
    gradient_volume,
    hu_tensor,
    light_offset,
    local_light_depth,
    ras_to_ijk_vectors,
    sample_grid,
)
from .transfer import TransferFunction
from .volume import Volume

MODES = ("cinematic", "shaded", "emission-absorption")

#: Default distance between samples along a ray, as a fraction of the smallest voxel spacing: VTK's and Slicer's
#: "normal" quality, and where the convergence curve in docs/results/reference.md levels off (halving the step
#: from here changes cinematic images by about 40 dB PSNR or more, less than 1 % RMS).
DEFAULT_STEP_FRACTION = 0.5

#: Rays stop once their accumulated opacity exceeds this.
EARLY_STOP_ALPHA = 0.99

#: Samples per ray processed together between early-termination checks.
SEGMENT_SAMPLES = 16

#: Edge of the occupancy bricks used to skip empty space, in voxels.
BRICK = 8

#: Smallest |n.v| for which VTK adds a specular term.
VTK_MIN_SPECULAR_DOT = 0.001


def default_step_mm(volume: Volume) -> float:
    """Default sample distance (mm): :data:`DEFAULT_STEP_FRACTION` of the smallest voxel spacing."""
    return DEFAULT_STEP_FRACTION * float(volume.spacing.min())


def resolve_device(device):
    """A ``torch.device`` for ``device`` ("cpu", "cuda", "cuda:1", "auto"); raises when CUDA is unavailable."""
    import torch

    from .errors import BackendUnavailableError

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


# ---- shading ------------------------------------------------------------------------------------------------
def cinematic_radiance(colour, fields, tf: TransferFunction, lighting: LightingRig, view_dir=None):
    """Scene-linear radiance ``[M, 3]`` leaving samples towards the camera (cinematic mode), before alpha.

    ``colour`` ``[M, 3]``: TF colour (albedo). ``fields`` ``[M, 8]``: the :class:`Illumination` fields at the
    samples (gradient RAS HU/mm, ``-ln T_key``, ``-ln sky``, scatter RGB). ``view_dir`` ``[M, 3]``: unit ray directions
    (camera to sample, RAS), or ``None`` for the view-independent part (see
    :func:`RenderFMLib.illumination.baked_radiance`). With ``n`` the outward normal (flipped towards the viewer
    when a view is given), ``l`` the key direction, ``h`` the half vector, ``w = 1 - exp(-|grad| / surface_gradient)``
    and ``p`` the Henyey-Greenstein phase normalised to 1 for isotropic scattering::

        L = I_key * key_color * T_key * (w * (c * max(n.l, 0) + ks * max(n.h, 0) ** power * max(n.l, 0))
                                         + (1 - w) * c * p(l . view_dir))
            + I_sky * sky_color * sky * c + scatter_strength * I_key * key_color * scatter * c

    with ``ks = tf.specular * specular_scale`` and ``power = tf.specular_power``.
    """
    import torch

    gradient = fields[:, 0:3]
    t_key, sky, scatter = torch.exp(-fields[:, 3:4]), torch.exp(-fields[:, 4:5]), fields[:, 5:8]
    magnitude = torch.sqrt((gradient * gradient).sum(1, keepdim=True))
    has_normal = magnitude > MIN_GRADIENT
    normal = torch.where(has_normal, -gradient / torch.where(has_normal, magnitude, torch.ones_like(magnitude)),
                         torch.zeros_like(gradient))
    surface = 1.0 - torch.exp(-magnitude / lighting.surface_gradient)
    light = torch.tensor(lighting.key_direction, dtype=colour.dtype, device=colour.device)
    key_color = torch.tensor(lighting.key_color, dtype=colour.dtype, device=colour.device)
    sky_color = torch.tensor(lighting.sky_color, dtype=colour.dtype, device=colour.device)
    if view_dir is not None:
        to_eye = -view_dir
        facing = (normal * to_eye).sum(1, keepdim=True)
        normal = torch.where(facing < 0, -normal, normal)
    n_dot_l = (normal * light).sum(1, keepdim=True).clamp(min=0.0)
    surface_term = colour * n_dot_l
    volume_term = colour
    if view_dir is not None:
        half = light + to_eye
        half = half / torch.sqrt((half * half).sum(1, keepdim=True)).clamp(min=1e-6)
        n_dot_h = (normal * half).sum(1, keepdim=True).clamp(min=0.0)
        ks = tf.specular * lighting.specular_scale
        if ks > 0:
            surface_term = surface_term + ks * torch.pow(n_dot_h, tf.specular_power) * n_dot_l
        g = lighting.phase_g
        if g != 0.0:
            cos_theta = (view_dir * light).sum(1, keepdim=True)
            phase = (1.0 - g * g) / torch.pow((1.0 + g * g - 2.0 * g * cos_theta).clamp(min=1e-6), 1.5)
            volume_term = colour * phase
    key = (lighting.key_intensity * key_color) * t_key * (surface * surface_term + (1.0 - surface) * volume_term)
    ambient = (lighting.sky_intensity * sky_color) * sky * colour
    bounce = (lighting.scatter_strength * lighting.key_intensity * key_color) * scatter * colour
    return key + ambient + bounce


def vtk_shading_volumes(gradient, tf: TransferFunction, view_direction: np.ndarray):
    """Per-voxel VTK headlight shading ``[2, K, J, I]``: diffuse ``D`` and specular ``S`` (see module docstring).

    ``gradient`` ``[3, K, J, I]`` (RAS); ``view_direction``: unit camera direction of projection (RAS).
    """
    import torch

    v = torch.as_tensor(np.asarray(view_direction, dtype=np.float32), device=gradient.device)
    magnitude = torch.sqrt((gradient * gradient).sum(0))
    n_dot_v = ((gradient * v[:, None, None, None]).sum(0) / magnitude.clamp(min=MIN_GRADIENT)).abs()
    n_dot_v = torch.where(magnitude > MIN_GRADIENT, n_dot_v.clamp(max=1.0), torch.zeros_like(n_dot_v))
    diffuse = tf.ambient + tf.diffuse * n_dot_v
    specular = torch.where(n_dot_v > VTK_MIN_SPECULAR_DOT, tf.specular * torch.pow(n_dot_v, tf.specular_power),
                           torch.zeros_like(n_dot_v))
    return torch.stack([diffuse, specular]).contiguous()


# ---- rays ------------------------------------------------------------------------------------------------------
@dataclass
class _Rays:
    """Rays that hit the volume box: pixel index, origin and direction in grid_sample and voxel coordinates, unit
    RAS direction, and the distances (mm from the ray origin) where the ray enters and leaves the box."""

    pixel: object  # [R] int64
    grid_origin: object  # [R, 3] float32, grid_sample (x, y, z) = (i, j, k) normalised to [-1, 1]
    grid_dir: object  # [R, 3] per mm
    ijk_origin: object  # [R, 3] float32 voxel coordinates
    ijk_dir: object  # [R, 3] per mm
    ras_dir: object  # [R, 3] unit
    t_near: object  # [R] float32 mm
    t_far: object  # [R] float32 mm


def _camera_rays(volume: Volume, camera: Camera, device) -> _Rays:
    """Pixel rays clipped to the box of voxel centres (slab method in voxel coordinates, exact for oblique grids)."""
    import torch

    origins, directions = camera.pixel_rays()
    directions = directions.reshape(-1, 3)
    ijk0 = volume.ras_to_ijk_points(origins.reshape(-1, 3))
    dijk = directions @ volume.ras_to_ijk[:3, :3].T
    upper = np.array(volume.shape[::-1], dtype=np.float64) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(np.abs(dijk) > 1e-12, 1.0 / np.where(np.abs(dijk) > 1e-12, dijk, 1.0), np.inf)
        t_a = (0.0 - ijk0) * inv
        t_b = (upper - ijk0) * inv
    parallel = np.abs(dijk) <= 1e-12
    inside = (ijk0 >= 0.0) & (ijk0 <= upper)
    t_lo = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(t_a, t_b))
    t_hi = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(t_a, t_b))
    t_near = np.maximum(t_lo.max(axis=1), 0.0)
    t_far = t_hi.min(axis=1)
    hit = np.nonzero(t_far > t_near)[0]
    scale = 2.0 / upper
    grid0 = ijk0[hit] * scale - 1.0
    gridd = dijk[hit] * scale

    def tensor(a, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    return _Rays(pixel=tensor(hit, torch.int64), grid_origin=tensor(grid0), grid_dir=tensor(gridd),
                 ijk_origin=tensor(ijk0[hit]), ijk_dir=tensor(dijk[hit]), ras_dir=tensor(directions[hit]),
                 t_near=tensor(t_near[hit]), t_far=tensor(t_far[hit]))


def _occupancy(hu, table: TFTable):
    """Dilated brick occupancy ``[Kb, Jb, Ib]`` (bool): a brick of :data:`BRICK`^3 voxels is occupied when the TF
    has opacity somewhere between the min and max HU of its voxels and their neighbours (trilinear samples in the
    brick stay in that range); dilated by one brick so a coarse march cannot step over an occupied brick."""
    import torch.nn.functional as F

    x = hu[None, None]
    pad = [(-s) % BRICK for s in hu.shape]
    x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    hi = F.max_pool3d(F.pad(x, (1,) * 6, mode="replicate"), kernel_size=BRICK + 2, stride=BRICK)
    lo = -F.max_pool3d(F.pad(-x, (1,) * 6, mode="replicate"), kernel_size=BRICK + 2, stride=BRICK)
    occupied = table.visible_between(lo[0, 0], hi[0, 0])
    dilated = F.max_pool3d(occupied[None, None].float(), kernel_size=3, stride=1, padding=1)[0, 0] > 0
    return dilated


def _skip_empty(rays: _Rays, occupancy, spacing_min: float, start: int, stop: int):
    """Tighten ``t_near``/``t_far`` of rays ``start:stop`` to the span where the occupancy grid is non-empty.

    A coarse march takes steps of at most 0.9 brick in voxel units; since every occupied brick is surrounded by a
    one-brick shell of dilated occupancy, the first and last coarse samples in dilated bricks bracket all samples
    that can have opacity. Returns ``(t_near, t_far)`` for the rays (``t_far < t_near`` when nothing is hit).
    """
    import torch

    t0 = rays.t_near[start:stop]
    t1 = rays.t_far[start:stop]
    delta = 0.9 * BRICK * spacing_min
    count = int(torch.ceil(((t1 - t0).max() / delta)).item()) + 1 if t0.numel() else 1
    kb, jb, ib = occupancy.shape
    flat = occupancy.reshape(-1)
    ts = t0[:, None] + delta * torch.arange(count, device=t0.device, dtype=t0.dtype)[None, :]
    valid = ts <= t1[:, None] + delta
    ts = torch.minimum(ts, t1[:, None])
    o, d = rays.ijk_origin[start:stop], rays.ijk_dir[start:stop]
    cells = []
    for axis, size in zip((0, 1, 2), (ib, jb, kb), strict=True):
        coordinate = o[:, axis:axis + 1] + ts * d[:, axis:axis + 1]
        cells.append(torch.div(coordinate.clamp(min=0.0), BRICK, rounding_mode="floor").long().clamp(0, size - 1))
    hit = flat[(cells[2] * jb + cells[1]) * ib + cells[0]] & valid
    any_hit = hit.any(dim=1)
    index = torch.arange(count, device=t0.device)
    first = torch.where(hit, index, count).min(dim=1).values.clamp(max=count - 1)
    last = torch.where(hit, index, -1).max(dim=1).values.clamp(min=0)
    near = torch.maximum(t0, t0 + delta * first.to(t0.dtype) - delta)
    far = torch.minimum(t1, t0 + delta * last.to(t0.dtype) + delta)
    far = torch.where(any_hit, far, near - 1.0)
    return near, far


# ---- the renderer ------------------------------------------------------------------------------------------------
def render_reference(volume: Volume, tf: TransferFunction, camera: Camera, mode: str = "cinematic",
                     step_mm: float | None = None, lighting: LightingRig | None = None, device="cpu",
                     chunk_rays: int = 65536, illumination: Illumination | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Render ``volume`` (the working grid) with ``tf`` from ``camera``; see the module docstring for the modes.

    ``step_mm``: distance between samples along a ray (default :func:`default_step_mm`). ``lighting``: the
    cinematic rig (default :class:`LightingRig`). ``illumination``: precomputed with
    :func:`~RenderFMLib.illumination.compute_illumination` for this volume, TF and rig, to reuse across views
    (computed here when omitted). ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"``. ``chunk_rays``: rays marched
    together (memory grows with it; the image does not depend on it).
    Returns ``(rgb [H, W, 3], alpha [H, W, 1])`` float32 numpy, premultiplied linear RGB in [0, 1].
    """
    import torch

    if mode not in MODES:
        raise RenderFMError(f"unknown render mode {mode!r}; choose one of {', '.join(MODES)}")
    step = default_step_mm(volume) if step_mm is None else float(step_mm)
    if not (math.isfinite(step) and step > 0):
        raise RenderFMError(f"step_mm must be a positive number of mm, got {step_mm}")
    if int(chunk_rays) < 1:
        raise RenderFMError(f"chunk_rays must be >= 1, got {chunk_rays}")
    dev = resolve_device(device)
    if mode == "cinematic":
        if illumination is None:
            illumination = compute_illumination(volume, tf, lighting, dev)
        elif lighting is not None and lighting != illumination.lighting:
            raise RenderFMError("the illumination was computed with another lighting rig; pass the same rig or "
                                "recompute the illumination")
        if tuple(illumination.shape) != volume.shape:
            raise VolumeError(f"{volume.name}: illumination was computed for a {illumination.shape} grid but the "
                              f"volume is {volume.shape}; compute it on this working grid")
        lighting = illumination.lighting
    with torch.no_grad():
        return _render(volume, tf, camera, mode, step, lighting, dev, int(chunk_rays), illumination)


def _render(volume, tf, camera, mode, step, lighting, dev, chunk_rays, illumination):
    import torch

    from .tonemap import tone_map

    hu = hu_tensor(volume, dev)
    table = TFTable.build(tf, dev)
    step_table = table.step_table(step)
    gradient = None
    if mode == "cinematic":
        illumination_fields = illumination.fields.to(dev)
        gradient = illumination_fields[0:3]
    elif (mode == "shaded" and tf.shade) or tf.has_gradient_opacity:
        gradient = gradient_volume(hu, volume.ijk_to_ras)
    primary = [hu]
    if tf.has_gradient_opacity:
        primary.append(torch.sqrt((gradient * gradient).sum(0)))
    primary = torch.stack(primary)[None].contiguous()  # [1, C1, K, J, I]
    # shading inputs are read together at scattered positions: channels-last keeps a voxel's channels in one
    # cache line (measured 2.5x faster trilinear sampling of 8 channels of a 256^3 grid)
    if mode == "cinematic":
        secondary = illumination_fields[None].contiguous(memory_format=torch.channels_last_3d)
    elif mode == "shaded" and tf.shade:
        secondary = vtk_shading_volumes(gradient, tf, camera.basis()[2])[None].contiguous(
            memory_format=torch.channels_last_3d)
    else:
        secondary = None
    del gradient
    rays = _camera_rays(volume, camera, dev)
    occupancy = _occupancy(hu, table)
    rgb = torch.zeros((camera.height * camera.width, 3), dtype=torch.float32, device=dev)
    alpha = torch.zeros((camera.height * camera.width,), dtype=torch.float32, device=dev)
    grid_scale = torch.tensor([2.0 / (s - 1) for s in volume.shape[::-1]], dtype=torch.float32, device=dev)
    ras_to_ijk = torch.as_tensor(volume.ras_to_ijk[:3, :3], dtype=torch.float32, device=dev)
    context = _MarchContext(tf=tf, table=table, step_table=step_table, primary=primary, secondary=secondary,
                            mode=mode, step=step, lighting=lighting, volume=volume, grid_scale=grid_scale,
                            ras_to_ijk=ras_to_ijk)
    spacing_min = float(volume.spacing.min())
    for start in range(0, int(rays.pixel.numel()), chunk_rays):
        stop = min(start + chunk_rays, int(rays.pixel.numel()))
        near, far = _skip_empty(rays, occupancy, spacing_min, start, stop)
        colour, opacity = _march(context, rays, start, stop, near, far)
        rgb[rays.pixel[start:stop]] = colour
        alpha[rays.pixel[start:stop]] = opacity
    rgb = rgb.reshape(camera.height, camera.width, 3)
    alpha = alpha.reshape(camera.height, camera.width, 1)
    if mode == "cinematic":
        rgb = tone_map(rgb, alpha, lighting.exposure)
    rgb = rgb.clamp(0.0, 1.0)
    return rgb.cpu().numpy().astype(np.float32), alpha.cpu().numpy().astype(np.float32)


@dataclass
class _MarchContext:
    tf: TransferFunction
    table: TFTable
    step_table: object  # [N, 4] RGB + alpha corrected for the step
    primary: object  # [1, C1, K, J, I]: HU (+ gradient magnitude when the TF has gradient opacity)
    secondary: object  # [1, C2, K, J, I] or None: shading inputs sampled where alpha > 0
    mode: str
    step: float
    lighting: LightingRig | None
    volume: Volume
    grid_scale: object  # [3]: grid_sample units per voxel along i, j, k
    ras_to_ijk: object  # [3, 3] float32: RAS displacement (mm) -> voxel-index displacement (i, j, k)


def _march(ctx: _MarchContext, rays: _Rays, start: int, stop: int, near, far):
    """March rays ``start:stop`` between ``near`` and ``far`` (mm); returns premultiplied RGB ``[R, 3]`` and
    alpha ``[R]`` (scene-linear for the cinematic mode)."""
    import torch

    dev = near.device
    count = stop - start
    first = torch.ceil(near / ctx.step).to(torch.int64)
    last = torch.floor(far / ctx.step).to(torch.int64)
    colour = torch.zeros((count, 3), dtype=torch.float32, device=dev)
    transmittance = torch.ones((count,), dtype=torch.float32, device=dev)
    active = torch.nonzero(last >= first).squeeze(1)
    origin = rays.grid_origin[start:stop]
    direction = rays.grid_dir[start:stop]
    ras_dir = rays.ras_dir[start:stop]
    preintegrate = ctx.mode == "cinematic"
    # cinematic segments also sample the point before their first, the front end of the first ray segment
    offsets = torch.arange(-1 if preintegrate else 0, SEGMENT_SAMPLES, device=dev, dtype=torch.int64)
    next_sample = first
    stop_transmittance = 1.0 - EARLY_STOP_ALPHA
    while active.numel() > 0:
        n_active = int(active.numel())
        numbers = next_sample[active][:, None] + offsets[None, :]  # [A, S] (or [A, S + 1])
        t = numbers.to(torch.float32) * ctx.step
        grid = origin[active][:, None, :] + t[..., None] * direction[active][:, None, :]
        base = sample_grid(ctx.primary, grid.reshape(-1, 3)).reshape(n_active, offsets.numel(), -1)  # [A, S(+1), C1]
        if preintegrate:
            numbers, grid_front, grid, front, base = (numbers[:, 1:], grid[:, :-1], grid[:, 1:], base[:, :-1, 0],
                                                      base[:, 1:])
        valid = (numbers <= last[active][:, None]).reshape(-1)
        grid = grid.reshape(-1, 3)
        base = base.reshape(-1, base.shape[-1])
        if preintegrate:
            colour_tf, sample_alpha, fraction, here = ctx.table.preintegrated(front.reshape(-1), base[:, 0],
                                                                                ctx.step)
            grid_front = grid_front.reshape(-1, 3)
            grid = grid_front + fraction[:, None] * (grid - grid_front)  # where the segment is lit
            if ctx.tf.has_gradient_opacity:
                factor = ctx.tf.gradient_factor(base[:, 1]).clamp(0.0, 1.0)
                sample_alpha = 1.0 - torch.pow(1.0 - sample_alpha, factor)
        else:
            classified = ctx.table.lookup(base[:, 0], ctx.step_table)  # [A*S, 4]
            colour_tf, sample_alpha, here = classified[:, :3], classified[:, 3], base[:, 0]
            if ctx.tf.has_gradient_opacity:
                unit = ctx.table.lookup(base[:, 0], ctx.table.table[:, 3:4])[:, 0]
                unit = (unit * ctx.tf.gradient_factor(base[:, 1])).clamp(0.0, 1.0)
                sample_alpha = 1.0 - torch.pow(1.0 - unit, ctx.step / ctx.tf.unit_distance)
        sample_alpha = torch.where(valid, sample_alpha, torch.zeros_like(sample_alpha))
        emitted = _shade(ctx, colour_tf, sample_alpha, grid, here, ras_dir[active])
        alpha2 = sample_alpha.reshape(n_active, SEGMENT_SAMPLES)
        keep = 1.0 - alpha2
        inside = torch.cumprod(keep, dim=1)
        before = torch.cat([torch.ones_like(inside[:, :1]), inside[:, :-1]], dim=1)
        contribution = (before[..., None] * emitted.reshape(n_active, SEGMENT_SAMPLES, 3)).sum(dim=1)
        t_active = transmittance[active]
        colour[active] = colour[active] + t_active[:, None] * contribution
        t_active = t_active * inside[:, -1]
        transmittance[active] = t_active
        next_sample[active] = next_sample[active] + SEGMENT_SAMPLES
        alive = (next_sample[active] <= last[active]) & (t_active > stop_transmittance)
        active = active[alive]
    return colour, 1.0 - transmittance


def _shade(ctx: _MarchContext, rgb, sample_alpha, grid, hu, ras_dir):
    """Premultiplied emitted colour ``[A*S, 3]`` of the samples (zero where alpha is 0); ``hu`` ``[A*S]`` is the HU
    where the samples are shaded."""
    import torch

    if ctx.secondary is None:  # emission-absorption, or shaded with the TF's shading off
        return rgb * sample_alpha[:, None]
    emitted = torch.zeros_like(rgb)
    index = torch.nonzero(sample_alpha > 0).squeeze(1)
    if index.numel() == 0:
        return emitted
    c = rgb[index]
    if ctx.mode == "shaded":
        extra = sample_grid(ctx.secondary, grid[index])
        radiance = c * extra[:, 0:1] + extra[:, 1:2]
    else:
        position = grid[index]
        gradient = sample_grid(ctx.secondary[:, 0:3], position)
        offset = ras_to_ijk_vectors(light_offset(gradient, ctx.lighting, ctx.volume), ctx.ras_to_ijk) * ctx.grid_scale
        there = position + offset
        light = sample_grid(ctx.secondary[:, 3:8], there)
        light[:, 0:2] += local_light_depth(ctx.table, hu[index], sample_grid(ctx.primary[:, 0:1], there)[:, 0],
                                           gradient, ctx.lighting, ctx.volume)[:, None]
        view = ras_dir[torch.div(index, SEGMENT_SAMPLES, rounding_mode="floor")]
        radiance = cinematic_radiance(c, torch.cat([gradient, light], dim=1), ctx.tf, ctx.lighting, view)
    emitted[index] = radiance * sample_alpha[index, None]
    return emitted
