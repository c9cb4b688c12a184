"""Training data: CT volumes x transfer functions x segment subsets x views, with cached ground truth.

A :class:`TrainingSource` is one CT volume (file, DICOM folder or phantom) with an optional label map.
:class:`SampleFactory` draws a :class:`Sample` from a seed: a random crop of a random source on the working grid
(with random flips and a quarter turn about the superior axis), a transfer function (a CT preset or a random
perturbation of one: HU shifts, opacity scale, colour jitter), sometimes a random subset of segments shown alone,
and random views around the crop. Everything needed for a training step is precomputed in the sample: the
illumination, the analytic Gaussians, the network input features and the cinematic reference images (cached on
disk by content hash, see :mod:`RenderFMLib.train.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..analytic import AnalyticResult, analytic_gaussians
from ..camera import Camera, sphere_cameras
from ..errors import RenderFMError
from ..illumination import LightingRig, compute_illumination
from ..model.features import make_features
from ..pipeline import apply_mask, working_grid
from ..presets import ct_preset_names, get_preset
from ..transfer import TransferFunction
from ..volume import Volume, crop, load_volume, resample_to_grid
from .cache import ReferenceCache

#: Presets used for training (CT presets that show something on typical torso CT).
TRAINING_PRESETS = ("CT-AAA", "CT-AAA2", "CT-Bone", "CT-Bones", "CT-Cardiac", "CT-Cardiac2", "CT-Cardiac3",
                    "CT-Chest-Contrast-Enhanced", "CT-Chest-Vessels", "CT-Coronary-Arteries",
                    "CT-Coronary-Arteries-2", "CT-Coronary-Arteries-3", "CT-Cropped-Volume-Bone", "CT-Fat",
                    "CT-Liver-Vasculature", "CT-Lung", "CT-MIP", "CT-Muscle", "CT-Pulmonary-Arteries",
                    "CT-Soft-Tissue")


#: Fewest Gaussians a training sample may have.
MIN_GAUSSIANS = 64


@dataclass
class TrainingSource:
    """A training volume: ``spec`` for :func:`load_volume` and an optional label-map file on the same grid."""

    spec: str
    labels: str | None = None

    def load(self, spacing_mm: float) -> tuple[Volume, np.ndarray | None]:
        """The volume resampled to ``spacing_mm`` and its labels (nearest neighbour) or ``None``."""
        if self.spec.startswith("phantom"):
            from ..phantom import make_phantom

            seed = int(self.spec.split(":", 1)[1]) if ":" in self.spec else 0
            phantom = make_phantom(seed=seed, spacing_mm=spacing_mm)
            return phantom.volume, phantom.labels.astype(np.int32)
        volume = load_volume(self.spec)
        labels = None
        if self.labels:
            label_volume = load_volume(self.labels)
            same_grid = label_volume.shape == volume.shape and np.allclose(label_volume.ijk_to_ras,
                                                                           volume.ijk_to_ras, atol=1e-3)
            labels = label_volume.array if same_grid else resample_to_grid(label_volume, volume)
        working, _, labels = working_grid(volume, spacing_mm, labels=labels, crop_body=False)
        return working, labels


def discover_sources(folder: str | Path) -> list[TrainingSource]:
    """CT files (``*.nii.gz``, ``*.nrrd``, ``*.mha``...) and DICOM folders under ``folder``, each paired with a label
    map named ``<stem>.labels.nii.gz`` anywhere under ``folder`` when one exists (label maps are not sources)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RenderFMError(f"{folder}: training data folder not found")
    suffixes = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
    labels = {p.name.split(".labels.")[0]: p for p in folder.rglob("*.labels.*")}
    sources = []
    for path in sorted(folder.rglob("*")):
        name = path.name
        if path.is_file() and name.endswith(suffixes) and ".labels." not in name:
            stem = next(name[: -len(s)] for s in suffixes if name.endswith(s))
            label = labels.get(stem) or next((p for key, p in labels.items() if stem.startswith(key)
                                              or key.startswith(stem)), None)
            sources.append(TrainingSource(str(path), str(label) if label else None))
        elif path.is_dir() and _holds_dicom(path):
            label = next((p for key, p in labels.items() if key.startswith(path.name.split("_")[0])
                          and "dicom" in key), None)
            sources.append(TrainingSource(str(path), str(label) if label else None))
    return sources


def _holds_dicom(folder: Path) -> bool:
    """True if ``folder`` directly holds a DICOM file ("DICM" at byte 128)."""
    for child in sorted(folder.iterdir())[:5]:
        if child.is_file():
            with open(child, "rb") as handle:
                if handle.read(132)[128:132] == b"DICM":
                    return True
    return False


def perturb_tf(tf: TransferFunction, rng: np.random.Generator, strength: float = 1.0) -> TransferFunction:
    """A random variation of ``tf``: a global HU shift (+-60 HU), per-point HU jitter (+-25 HU), opacity scaled by
    ``exp(N(0, 0.35))``, colours scaled per channel by ``U(0.8, 1.2)`` — all times ``strength``."""
    shift = rng.uniform(-60, 60) * strength
    opacity = tf.opacity_points.copy()
    colour = tf.color_points.copy()
    opacity[:, 0] += shift + rng.uniform(-25, 25, len(opacity)) * strength
    colour[:, 0] += shift
    opacity[:, 1] = np.clip(opacity[:, 1] * np.exp(rng.normal(0, 0.35 * strength)), 0, 1)
    colour[:, 1:] = np.clip(colour[:, 1:] * rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength, 3), 0, 1)
    return replace(tf, opacity_points=opacity, color_points=colour, name=f"{tf.name}~perturbed")


@dataclass
class Sample:
    """One training example (all tensors on the sample's device).

    ``working``: the cropped, masked working grid; ``features`` ``[6, K, J, I]``; ``analytic``: Gaussians and
    voxel indices; ``cameras``: views; ``targets`` ``[V, H, W, 3]`` tone-mapped cinematic reference images.
    """

    working: Volume
    tf: TransferFunction
    lighting: LightingRig
    features: torch.Tensor
    analytic: AnalyticResult
    cameras: list[Camera]
    targets: torch.Tensor
    description: str


class SampleFactory:
    """Draws training samples from sources; see the module docstring.

    ``crop_voxels``: crop side on the working grid (``spacing_mm``); ``views`` and ``image_size`` per sample;
    ``perturb_probability`` and ``subset_probability``: chances of a perturbed TF and of a segment subset.
    """

    def __init__(self, sources: list[TrainingSource], spacing_mm: float = 3.0, crop_voxels: int = 48,
                 views: int = 2, image_size: int = 96, cache: ReferenceCache | None = None,
                 perturb_probability: float = 0.5, subset_probability: float = 0.25, augment: bool = True,
                 presets: tuple[str, ...] = TRAINING_PRESETS, device="cpu"):
        if not sources:
            raise RenderFMError("no training volumes")
        self.sources = sources
        self.spacing_mm = spacing_mm
        self.crop_voxels = crop_voxels
        self.views = views
        self.image_size = image_size
        self.cache = cache
        self.perturb_probability = perturb_probability
        self.subset_probability = subset_probability
        self.augment = augment
        known = set(ct_preset_names())
        self.presets = [p for p in presets if p in known]
        self.device = torch.device(device)
        self._loaded: dict[int, tuple[Volume, np.ndarray | None]] = {}

    def _source(self, index: int) -> tuple[Volume, np.ndarray | None]:
        if index not in self._loaded:
            self._loaded[index] = self.sources[index].load(self.spacing_mm)
        return self._loaded[index]

    def sample(self, seed: int, tf: TransferFunction | None = None, source_index: int | None = None) -> Sample:
        """The sample for ``seed`` (deterministic). ``tf``/``source_index`` fix the TF or the volume.

        A draw whose crop shows (almost) nothing under its TF is replaced by the draw for the next seed, so every
        sample carries a useful number of Gaussians.
        """
        for attempt in range(20):
            sample = self._draw(seed + 7_919 * attempt, tf, source_index)
            if len(sample.analytic.gaussians) >= MIN_GAUSSIANS:
                return sample
        raise RenderFMError(f"no visible content in 20 draws from seed {seed} (check the volumes and the TF)")

    def _draw(self, seed: int, tf: TransferFunction | None, source_index: int | None) -> Sample:
        rng = np.random.default_rng(seed)
        index = int(rng.integers(len(self.sources))) if source_index is None else source_index
        volume, labels = self._source(index)
        working, labels = self._crop(volume, labels, rng)
        if tf is None:
            tf = get_preset(self.presets[int(rng.integers(len(self.presets)))])
            if rng.uniform() < self.perturb_probability:
                tf = perturb_tf(tf, rng)
        mask, shown = None, "all"
        if labels is not None and rng.uniform() < self.subset_probability:
            present = [v for v in np.unique(labels) if v > 0]
            if present:
                chosen = rng.choice(present, size=max(1, len(present) // 2), replace=False)
                mask = np.isin(labels, chosen).astype(np.uint8)
                shown = f"{len(chosen)} segments"
        lighting = LightingRig()
        masked = apply_mask(working, mask, tf)
        illumination = compute_illumination(masked, tf, lighting, self.device)
        analytic = analytic_gaussians(masked, tf, illumination=illumination, device=self.device)
        features = make_features(torch.from_numpy(working.array).to(self.device), tf,
                                 None if mask is None else torch.from_numpy(mask).to(self.device))
        cameras = sphere_cameras(masked.center_ras(), masked.radius_mm(), self.views, self.image_size,
                                 self.image_size, seed=int(rng.integers(2**31)))
        targets = self._targets(masked, tf, lighting, illumination, cameras)
        description = f"{self.sources[index].spec} {tf.name} {shown}"
        return Sample(masked, tf, lighting, features, analytic, cameras, targets, description)

    def _crop(self, volume: Volume, labels, rng: np.random.Generator):
        size = self.crop_voxels
        body = np.argwhere(volume.array > -500)
        centre = body[int(rng.integers(len(body)))] if len(body) else np.array(volume.shape) // 2
        box = []
        for axis in range(3):
            length = volume.shape[axis]
            start = int(np.clip(centre[axis] - size // 2, 0, max(0, length - size)))
            box.append(slice(start, min(length, start + size)))
        box = tuple(box)
        working = crop(volume, box)
        labels = None if labels is None else labels[box]
        if self.augment:
            array = working.array
            for axis in range(3):
                if rng.uniform() < 0.5:
                    array = np.flip(array, axis)
                    labels = None if labels is None else np.flip(labels, axis)
            if rng.uniform() < 0.5 and array.shape[1] == array.shape[2]:
                array = np.rot90(array, 1, axes=(1, 2))
                labels = None if labels is None else np.rot90(labels, 1, axes=(1, 2))
            working = working.with_array(np.ascontiguousarray(array))
            labels = None if labels is None else np.ascontiguousarray(labels)
        return working, labels

    def _targets(self, working: Volume, tf: TransferFunction, lighting: LightingRig, illumination,
                 cameras: list[Camera]) -> torch.Tensor:
        from ..reference import render_reference

        images = []
        for camera in cameras:
            def render(camera=camera):
                return render_reference(working, tf, camera, lighting=lighting, device=self.device,
                                        illumination=illumination)[0]

            images.append(self.cache.get_or_render(working, tf, camera, lighting, render) if self.cache
                          else render())
        return torch.from_numpy(np.stack(images)).to(self.device)
