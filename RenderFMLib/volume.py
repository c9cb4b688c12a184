"""CT volumes in RAS millimetres: the typed volume object, reading from disk, resampling and cropping.

Conventions (see DESIGN.md):

* ``Volume.array`` is a float32 numpy array of Hounsfield units indexed ``[k, j, i]`` (Slicer's
  ``arrayFromVolume`` order): ``k`` is the slowest axis (slice), ``i`` the fastest (column).
* ``Volume.ijk_to_ras`` is a 4x4 float64 matrix mapping homogeneous voxel indices ``(i, j, k, 1)`` to RAS
  millimetres (Right, Anterior, Superior). Oblique directions and anisotropic spacing are allowed.
* Files read through SimpleITK carry LPS geometry; it is converted to RAS here, once, at the edge.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import VolumeError

#: ``diag(-1, -1, 1, 1)``: converts LPS homogeneous points to RAS and back (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Largest number of voxels accepted by default when loading or resampling (about 2 GB as float32).
DEFAULT_MAX_VOXELS = 512 * 1024 * 1024

#: Spacing outside this range (mm) is treated as an error: it almost always means a broken header.
MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 100.0


@dataclass
class Volume:
    """A scalar volume: HU array ``[K, J, I]`` (float32) plus a 4x4 ``ijk_to_ras`` matrix (mm).

    ``name`` is a human-readable label (file name or ``"phantom"``); ``source`` the path it came from, if any;
    ``modality_note`` is set when the intensities do not look like CT (e.g. MRI), else ``None``.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    name: str = "volume"
    source: str | None = None
    modality_note: str | None = field(default=None)

    def __post_init__(self) -> None:
        self.array = np.ascontiguousarray(self.array, dtype=np.float32)
        self.ijk_to_ras = np.asarray(self.ijk_to_ras, dtype=np.float64).reshape(4, 4)
        validate_array(self.array, self.ijk_to_ras, self.source or self.name)

    # ---- geometry -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(K, J, I)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along ``(i, j, k)`` in mm, shape (3,)."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit RAS directions of the ``i``, ``j``, ``k`` axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing[None, :]

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """Inverse of ``ijk_to_ras`` (4x4)."""
        return np.linalg.inv(self.ijk_to_ras)

    def corners_ras(self) -> np.ndarray:
        """The 8 corners of the voxel-centre box in RAS mm, shape (8, 3)."""
        k, j, i = (s - 1 for s in self.shape)
        ijk = np.array([[a, b, c, 1.0] for a in (0, i) for b in (0, j) for c in (0, k)])
        return (ijk @ self.ijk_to_ras.T)[:, :3]

    def bounds_ras(self) -> np.ndarray:
        """Axis-aligned RAS bounds of the voxel centres, shape (2, 3): ``[min_xyz, max_xyz]``."""
        c = self.corners_ras()
        return np.stack([c.min(0), c.max(0)])

    def center_ras(self) -> np.ndarray:
        """RAS position of the volume's centre (mm), shape (3,)."""
        return self.bounds_ras().mean(0)

    def radius_mm(self) -> float:
        """Radius of the sphere around :meth:`center_ras` that holds every voxel centre (mm)."""
        return float(np.linalg.norm(self.corners_ras() - self.center_ras(), axis=1).max())

    def ijk_to_ras_points(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` ordered ``(i, j, k)`` to RAS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_ijk_points(self, ras: np.ndarray) -> np.ndarray:
        """Map RAS mm points ``(..., 3)`` to continuous voxel indices ``(i, j, k)`` ``(..., 3)``."""
        m = self.ras_to_ijk
        ras = np.asarray(ras, dtype=np.float64)
        return ras @ m[:3, :3].T + m[:3, 3]

    def with_array(self, array: np.ndarray, name: str | None = None) -> "Volume":
        """A volume with the same geometry and a new array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise VolumeError(f"{self.name}: new array shape {array.shape} differs from {self.shape}")
        return Volume(array, self.ijk_to_ras.copy(), name or self.name, self.source, self.modality_note)

    def describe(self) -> dict:
        """JSON-ready summary: geometry, HU statistics and whether it looks like CT."""
        a = self.array
        pct = np.percentile(a[:: max(1, a.shape[0] // 64)], [1, 50, 99])
        return {
            "name": self.name,
            "source": self.source,
            "shape_kji": list(self.shape),
            "size_ijk": list(self.shape[::-1]),
            "spacing_mm": [round(float(s), 6) for s in self.spacing],
            "origin_ras": [round(float(v), 4) for v in self.ijk_to_ras[:3, 3]],
            "direction_ras": np.round(self.direction, 6).tolist(),
            "bounds_ras": np.round(self.bounds_ras(), 3).tolist(),
            "extent_mm": [round(float(v), 2) for v in (self.spacing * (np.array(self.shape[::-1]) - 1))],
            "hu_min": float(a.min()),
            "hu_max": float(a.max()),
            "hu_mean": float(a.mean()),
            "hu_p01_p50_p99": [float(v) for v in pct],
            "looks_like_ct": self.modality_note is None,
            "modality_note": self.modality_note,
            "memory_mb": round(a.nbytes / 2**20, 1),
        }


def validate_array(array: np.ndarray, ijk_to_ras: np.ndarray, name: str) -> None:
    """Raise :class:`VolumeError` naming ``name`` if the array or geometry cannot be rendered."""
    if array.ndim != 3:
        raise VolumeError(f"{name}: expected a 3D scalar volume, got an array with {array.ndim} dimensions "
                          f"(shape {tuple(array.shape)})")
    if min(array.shape) < 2:
        raise VolumeError(f"{name}: volume is too thin to render (shape {tuple(array.shape)}; every axis needs "
                          "at least 2 voxels)")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise VolumeError(f"{name}: {bad} voxel(s) are NaN or Inf; fix or mask them before rendering")
    if not np.isfinite(ijk_to_ras).all():
        raise VolumeError(f"{name}: the geometry (ijk_to_ras) contains NaN or Inf")
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    if spacing.min() < MIN_SPACING_MM or spacing.max() > MAX_SPACING_MM:
        raise VolumeError(f"{name}: absurd voxel spacing {[float(f'{s:.6g}') for s in spacing]} mm (accepted "
                          f"{MIN_SPACING_MM}..{MAX_SPACING_MM} mm per axis); the file header is probably wrong")
    if abs(np.linalg.det(ijk_to_ras[:3, :3] / spacing[None, :])) < 1e-6:
        raise VolumeError(f"{name}: the voxel axes are degenerate (singular direction matrix)")
    lo, hi = float(array.min()), float(array.max())
    if hi - lo < 1e-6:
        what = "empty (all zero)" if hi == 0 else f"constant (every voxel is {lo:g})"
        raise VolumeError(f"{name}: volume is {what}; there is nothing to render")


def ct_modality_note(array: np.ndarray) -> str | None:
    """``None`` if the intensities look like CT Hounsfield units, else a sentence saying why not.

    CT has air near -1000 HU and soft tissue near 0..100 HU; MRI or PET intensities are non-negative and
    unit-free. The test is deliberately lenient: it only flags volumes that cannot be HU.
    """
    sample = array[:: max(1, array.shape[0] // 64)]
    p1, p99 = np.percentile(sample, [1, 99])
    if p1 >= -200:
        return (f"intensities do not look like CT Hounsfield units (1st percentile {p1:.0f}, 99th {p99:.0f}; "
                "CT air is about -1000 HU). Rendering continues, but CT presets will not fit; use a custom "
                "transfer function")
    if p1 < -3000 or p99 > 40000:
        return f"intensity range {p1:.0f}..{p99:.0f} is unusual for CT Hounsfield units"
    return None


# ---- reading --------------------------------------------------------------------------------------------
READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def load_volume(spec: str | os.PathLike, max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """Load a volume from a file (NIfTI, NRRD, MHA/MHD), a DICOM series folder, or ``"phantom"``.

    ``"phantom"`` (optionally ``"phantom:SEED"``) returns the built-in procedural torso phantom.
    Raises :class:`VolumeError` with the path and the problem for anything unusable.
    """
    text = str(spec)
    if text == "phantom" or text.startswith("phantom:"):
        from .phantom import make_phantom

        seed = int(text.split(":", 1)[1]) if ":" in text else 0
        return make_phantom(seed=seed).volume
    path = Path(text).expanduser()
    if not path.exists():
        raise VolumeError(f"{path}: no such file or folder")
    import SimpleITK as sitk

    if path.is_dir():
        image = _read_dicom_series(path, sitk, max_voxels)
    else:
        image = _read_image_file(path, sitk, max_voxels)
    return volume_from_sitk(image, name=_display_name(path), source=str(path))


def _display_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_size(path: Path, size: tuple[int, ...], spacing: tuple[float, ...], max_voxels: int) -> None:
    n = math.prod(int(s) for s in size)
    if n > max_voxels:
        coarser = max(float(s) for s in spacing) * (n / max_voxels) ** (1 / 3)
        raise VolumeError(f"{path}: volume of {'x'.join(map(str, size))} = {n:,} voxels ({n * 4 / 2**30:.2f} GiB "
                          f"as float32) is too large for memory (limit {max_voxels:,} voxels); resample it to a "
                          f"coarser spacing of about {math.ceil(coarser * 10) / 10:g} mm or crop it before loading")


def _check_nifti_complete(path: Path, n_values: int) -> None:
    """Raise :class:`VolumeError` if a NIfTI file holds fewer data bytes than its header declares.

    ITK reads a truncated NIfTI without an error and fills the missing voxels with zeros, so the size is checked
    here: ``vox_offset + n_values * bitpix / 8`` against the file size (``.nii``) or the uncompressed size
    (``.nii.gz``: the gzip trailer first, a streaming count only when the trailer disagrees).
    """
    compressed = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            header = handle.read(540)
    except (EOFError, OSError, zlib.error):
        header = b""
    for endian in "<>":
        if len(header) >= 4 and struct.unpack(endian + "i", header[:4])[0] in (348, 540):
            break
    else:
        return  # not a NIfTI header ITK would accept; nothing to check
    if struct.unpack(endian + "i", header[:4])[0] == 348:
        bitpix = struct.unpack(endian + "h", header[72:74])[0]
        vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
    else:
        bitpix = struct.unpack(endian + "h", header[14:16])[0]
        vox_offset = struct.unpack(endian + "q", header[168:176])[0]
    expected = max(vox_offset, 352) + n_values * bitpix // 8
    if not compressed:
        actual = path.stat().st_size
    else:
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            trailer = struct.unpack("<I", handle.read(4))[0]
        if trailer == expected % 2**32:
            return
        actual = 0
        try:
            with gzip.open(path, "rb") as handle:
                while chunk := handle.read(1 << 24):
                    actual += len(chunk)
        except (EOFError, OSError, zlib.error):
            actual = -1
    if actual < expected:
        raise VolumeError(f"{path}: the file is truncated: its header declares {expected:,} bytes (header + voxels) "
                          + ("but the compressed stream ends early" if actual < 0 else f"but it holds {actual:,}"))


def _read_image_file(path: Path, sitk, max_voxels: int):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read this file as a medical image (missing, corrupt or unsupported "
                          f"format; supported: NIfTI, NRRD, MHA/MHD, DICOM folder): {_first_line(exc)}") from None
    dim = reader.GetDimension()
    size = tuple(reader.GetSize())
    if dim != 3 and not (dim == 4 and size[3] == 1):
        raise VolumeError(f"{path}: expected a 3D volume, got a {dim}D image of size {size}"
                          + (" (a single slice; give the whole series)" if dim == 2 else "")
                          + (" (a time series or multi-volume file; extract one volume)" if dim == 4 else ""))
    if reader.GetNumberOfComponents() != 1:
        raise VolumeError(f"{path}: expected a scalar (single-component) image, got "
                          f"{reader.GetNumberOfComponents()} components per voxel (colour or vector image)")
    _check_size(path, size[:3], reader.GetSpacing(), max_voxels)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_complete(path, math.prod(size))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: the file's header is readable but its voxel data is not (truncated or "
                          f"corrupt): {_first_line(exc)}") from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    return image


def _read_dicom_series(path: Path, sitk, max_voxels: int):
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(path))
    except RuntimeError:
        series = ()
    if not series:
        raise VolumeError(f"{path}: folder contains no DICOM series (give a NIfTI/NRRD/MHA file or a folder of "
                          "DICOM slices)")
    # The largest series is the image volume (scouts and dose reports are small).
    best = max(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(path), s)))
    files = reader.GetGDCMSeriesFileNames(str(path), best)
    if len(files) < 2:
        raise VolumeError(f"{path}: the DICOM series has a single slice; a 3D volume needs several")
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"{path}: cannot read the DICOM series ({len(files)} files): {_first_line(exc)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(f"{path}: DICOM series is not a scalar image (colour or multi-component)")
    _check_size(path, image.GetSize(), image.GetSpacing(), max_voxels)
    return image


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Description" in ln or "error" in ln.lower()]
    return (useful or lines or ["unknown error"])[-1][:300]


def volume_from_sitk(image, name: str = "volume", source: str | None = None) -> Volume:
    """Convert a 3D scalar SimpleITK image (LPS geometry) into a :class:`Volume` (RAS)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # [k, j, i]
    if array.ndim != 3:
        raise VolumeError(f"{source or name}: expected a 3D volume, got {array.ndim}D data")
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * spacing[None, :]
    ijk_to_lps[:3, 3] = origin
    label = source or name
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise VolumeError(f"{label}: {bad} voxel(s) are NaN or Inf; fix or mask them before rendering")
    volume = Volume(array.astype(np.float32), LPS_TO_RAS @ ijk_to_lps, name=label if source is None else name,
                    source=source)
    volume.modality_note = ct_modality_note(volume.array)
    return volume


def volume_to_sitk(volume: Volume):
    """Convert a :class:`Volume` to a SimpleITK float32 image with LPS geometry (for writing files)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.array)
    ijk_to_lps = LPS_TO_RAS @ volume.ijk_to_ras
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetDirection(tuple(float(v) for v in (ijk_to_lps[:3, :3] / volume.spacing[None, :]).ravel()))
    image.SetOrigin(tuple(float(v) for v in ijk_to_lps[:3, 3]))
    return image


def save_volume(volume: Volume, path: str | os.PathLike) -> None:
    """Write a volume to NIfTI/NRRD/MHA (chosen by the file name's suffix)."""
    import SimpleITK as sitk

    sitk.WriteImage(volume_to_sitk(volume), str(path), True)


# ---- resampling and cropping -----------------------------------------------------------------------------
def resampled_size(volume: Volume, spacing_mm: float | tuple[float, float, float],
                   max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[int, int, int]:
    """The grid size ``(K, J, I)`` :func:`resample` gives ``volume`` at ``spacing_mm``.

    Raises :class:`VolumeError` for a spacing that is not positive or a grid larger than ``max_voxels``.
    """
    target = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    if (target <= 0).any() or not np.isfinite(target).all():
        raise VolumeError(f"{volume.name}: working spacing must be positive, got {target.tolist()} mm")
    size_ijk = np.array(volume.shape[::-1], dtype=np.int64)
    extent = volume.spacing * (size_ijk - 1)
    new_size = np.maximum(2, np.round(extent / target).astype(np.int64) + 1)
    n = int(np.prod(new_size))
    if n > max_voxels:
        suggestion = float(np.ceil((np.prod(extent) / max_voxels) ** (1 / 3) * 10) / 10)
        raise VolumeError(f"{volume.name}: resampling to {target.tolist()} mm gives {n / 1e6:.0f} M voxels, too "
                          f"large for memory (limit {max_voxels / 1e6:.0f} M); use a coarser spacing, e.g. "
                          f"{suggestion} mm")
    return tuple(int(s) for s in new_size[::-1])  # type: ignore[return-value]


def resample(volume: Volume, spacing_mm: float | tuple[float, float, float],
             max_voxels: int = DEFAULT_MAX_VOXELS, order: str = "linear") -> Volume:
    """Resample to (about) ``spacing_mm`` keeping the same axes directions and physical extent.

    The new grid spans exactly the voxel-centre box of the input, so the achieved spacing can differ slightly
    from the request (by less than half a voxel over the extent). Downsampling low-pass filters first (box of the
    size of the reduction) so small dense structures are not aliased away. ``order`` is ``"linear"`` for HU or
    ``"nearest"`` for label maps (see also :func:`resample_labels`). Raises :class:`VolumeError` if the result
    would exceed ``max_voxels``.
    """
    import torch
    import torch.nn.functional as F

    size_kji = resampled_size(volume, spacing_mm, max_voxels)
    if size_kji == volume.shape:
        return volume
    size_ijk = np.array(volume.shape[::-1], dtype=np.int64)
    new_size = np.array(size_kji[::-1], dtype=np.int64)
    new_spacing = volume.spacing * (size_ijk - 1) / (new_size - 1)
    data = torch.from_numpy(volume.array)[None, None]
    factor = new_spacing / volume.spacing  # (i, j, k) reduction factors
    if order == "linear":
        kernel = [max(1, int(round(f))) for f in factor[::-1]]  # (k, j, i)
        if max(kernel) > 1:
            kernel = [k if k % 2 == 1 else k + 1 for k in kernel]
            data = F.avg_pool3d(F.pad(data, [kernel[2] // 2] * 2 + [kernel[1] // 2] * 2 + [kernel[0] // 2] * 2,
                                      mode="replicate"), kernel, stride=1)
        out = F.interpolate(data, size=size_kji, mode="trilinear", align_corners=True)
    elif order == "nearest":
        out = _nearest_align_corners(data, size_kji)
    else:
        raise ValueError(f"order must be 'linear' or 'nearest', got {order!r}")
    ijk_to_ras = volume.ijk_to_ras.copy()
    ijk_to_ras[:3, :3] = volume.direction * new_spacing[None, :]
    return Volume(out[0, 0].numpy(), ijk_to_ras, volume.name, volume.source, volume.modality_note)


def resample_labels(labels: np.ndarray, volume: Volume, spacing_mm: float | tuple[float, float, float],
                    max_voxels: int = DEFAULT_MAX_VOXELS) -> np.ndarray:
    """A label map or mask ``labels`` on ``volume``'s grid, resampled (nearest neighbour) to the grid
    :func:`resample` gives ``volume`` at ``spacing_mm``: ``[K, J, I]`` int32.

    Unlike a :class:`Volume`, ``labels`` may be constant (all zero: nothing shown). Float label values are rounded.
    """
    import torch

    array = np.asarray(labels)
    if array.shape != volume.shape:
        raise VolumeError(f"{volume.name}: label map shape {tuple(array.shape)} does not match the volume's "
                          f"{volume.shape}")
    if array.dtype.kind == "f":
        array = np.rint(array)
    data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int32))[None, None]
    size_kji = resampled_size(volume, spacing_mm, max_voxels)
    if size_kji == volume.shape:
        return data[0, 0].numpy().copy()
    return np.ascontiguousarray(_nearest_align_corners(data, size_kji)[0, 0].numpy())


def _nearest_align_corners(data, size: tuple[int, int, int]):
    """Nearest-neighbour resize of ``[1, 1, K, J, I]`` with corner voxels aligned (for label maps)."""
    import torch

    idx = [torch.round(torch.linspace(0, s_in - 1, s_out)).long()
           for s_in, s_out in zip(data.shape[2:], size, strict=True)]
    return data[:, :, idx[0]][:, :, :, idx[1]][:, :, :, :, idx[2]]


def body_bounding_box(array: np.ndarray, threshold_hu: float = -500.0, margin: int = 2) -> tuple[slice, ...]:
    """Index box ``(k, j, i)`` slices around voxels above ``threshold_hu``, padded by ``margin`` voxels.

    Small isolated bright specks (noise, table fragments under 0.1 % of the foreground along an axis) are
    ignored through per-axis percentiles of the foreground coordinates.
    """
    mask = array > threshold_hu
    if not mask.any():
        raise VolumeError(f"no voxel above {threshold_hu:g} HU: the volume has no body to crop to")
    box = []
    for axis in range(3):
        profile = mask.sum(axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
        cdf = np.cumsum(profile) / profile.sum()
        lo = int(np.searchsorted(cdf, 0.001))
        hi = int(np.searchsorted(cdf, 0.999))
        box.append(slice(max(0, lo - margin), min(array.shape[axis], hi + margin + 1)))
    return tuple(box)


def crop_to_body(volume: Volume, threshold_hu: float = -500.0, margin: int = 2) -> Volume:
    """Crop to the bounding box of non-air voxels (see :func:`body_bounding_box`), keeping RAS geometry."""
    box = body_bounding_box(volume.array, threshold_hu, margin)
    return crop(volume, box)


def crop(volume: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """Crop by index slices ``(k, j, i)`` (step 1), shifting the origin so RAS positions are unchanged."""
    starts = np.array([box[2].start or 0, box[1].start or 0, box[0].start or 0, 0], dtype=np.float64)
    ijk_to_ras = volume.ijk_to_ras.copy()
    ijk_to_ras[:3, 3] = (volume.ijk_to_ras @ (starts + np.array([0, 0, 0, 1.0])))[:3]
    return Volume(volume.array[box].copy(), ijk_to_ras, volume.name, volume.source, volume.modality_note)


def working_volume(volume: Volume, spacing_mm: float, crop_body: bool = True) -> Volume:
    """The grid the renderers work on: optionally cropped to the body, then resampled to ``spacing_mm``."""
    if crop_body and volume.modality_note is None:
        try:
            volume = crop_to_body(volume)
        except VolumeError:
            pass
    return resample(volume, spacing_mm)


def resample_to_grid(source: Volume, target: Volume, order: str = "nearest", fill: float = 0.0) -> np.ndarray:
    """``source``'s values on ``target``'s voxel grid (through RAS), ``[K, J, I]`` float32 shaped like ``target``.

    For label maps stored on the same physical grid in another index order (flipped axes) or on another grid.
    ``order`` is ``"nearest"`` or ``"linear"``; voxels outside ``source`` get ``fill``.
    """
    import torch
    import torch.nn.functional as F

    k, j, i = target.shape
    grid = np.stack(np.meshgrid(np.arange(i), np.arange(j), np.arange(k), indexing="xy"), -1)  # [J, I, K, 3]
    grid = np.transpose(grid, (2, 0, 1, 3)).reshape(-1, 3).astype(np.float64)  # (i, j, k) per target voxel
    ijk = source.ras_to_ijk_points(target.ijk_to_ras_points(grid))
    size = np.array(source.shape[::-1], dtype=np.float64)
    normalised = torch.from_numpy((2.0 * ijk / np.maximum(size - 1, 1) - 1.0).astype(np.float32))
    data = torch.from_numpy(source.array)[None, None]
    mode = "nearest" if order == "nearest" else "bilinear"
    out = F.grid_sample(data - fill, normalised.reshape(1, k, j, i, 3), mode=mode, padding_mode="zeros",
                        align_corners=True)
    return (out[0, 0] + fill).numpy()
