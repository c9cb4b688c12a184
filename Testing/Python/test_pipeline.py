"""The high-level pipeline: prepare_scene / render_scene / render_scene_reference, masks, caching, device errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from RenderFMLib.camera import orbit_cameras
from RenderFMLib.errors import BackendUnavailableError, RenderFMError
from RenderFMLib.metrics import psnr
from RenderFMLib.pipeline import Rendered, prepare_scene, render_scene, render_scene_reference, resolve_device
from RenderFMLib.presets import get_preset

pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def torso(small_phantom):
    """The phantom at 6 mm with its labels."""
    return small_phantom


@pytest.fixture(scope="module")
def scene(torso):
    return prepare_scene(torso.volume, get_preset("CT-Bone"), labels=torso.labels, spacing_mm=6.0, device="cpu")


def cameras(scene, count=2, size=(64, 48)):
    return orbit_cameras(scene.working.center_ras(), scene.working.radius_mm(), count, *size, elevation_deg=20)


def test_prepare_and_render_shapes(scene):
    assert scene.method == "analytic" and scene.device == torch.device("cpu") and scene.prep_seconds > 0
    assert scene.num_gaussians == scene.info["counts"]["kept"] > 1000
    assert scene.info["spacing_mm"] == 6.0 and list(scene.working.shape) == scene.info["grid"]
    assert scene.gaussians.labels is not None  # labels follow the Gaussians
    camera = cameras(scene)[0]
    image = render_scene(scene, camera)
    assert isinstance(image, Rendered) and image.backend == "cpu-fast" and image.seconds > 0
    assert image.rgb.shape == (48, 64, 3) and image.alpha.shape == (48, 64, 1)
    assert image.rgb.dtype == np.float32 and 0.0 <= image.rgb.min() and image.rgb.max() <= 1.0
    assert 0.1 < float(image.alpha.mean()) < 0.9
    torch_image = render_scene(scene, camera, backend="torch")
    assert float(np.abs(torch_image.rgb - image.rgb).mean()) < 1e-3
    reference, alpha = render_scene_reference(scene, camera)
    assert reference.shape == (48, 64, 3) and alpha.shape == (48, 64, 1)
    assert psnr(image.rgb, reference) > 18.0  # same scene, same tone mapping (6 mm grid, 64 px: coarse)
    rgb, alpha = render_scene(scene, camera, backend="auto", differentiable=True)
    assert isinstance(rgb, torch.Tensor) and rgb.shape == (48, 64, 3) and alpha.shape == (48, 64, 1)


def test_conditioning_factors_are_cached_per_gaussians_object(scene):
    factors = scene.conditioning()
    assert scene.conditioning() is factors
    render_scene(scene, cameras(scene)[1])
    assert scene.conditioning() is factors  # rendering reused them
    fewer = replace(scene, gaussians=scene.gaussians[: scene.num_gaussians // 2])
    assert fewer.conditioning() is not factors and len(fewer.conditioning().means) == scene.num_gaussians // 2
    assert scene.conditioning() is factors  # the original scene keeps its cache
    scene_copy = replace(scene)
    scene_copy.gaussians = scene.gaussians.clone()
    assert scene_copy.conditioning() is not factors
    torch.testing.assert_close(scene_copy.conditioning().cov, factors.cov)


def test_masks_hide_segments(torso, scene):
    tf = get_preset("CT-Bone")
    bone_labels = [12, 13, 14, 28, 29, 30]
    mask = np.isin(torso.labels, bone_labels)
    bones = prepare_scene(torso.volume, tf, mask=mask, labels=torso.labels, spacing_mm=6.0, device="cpu")
    assert 0 < bones.num_gaussians < scene.num_gaussians
    assert bool(np.isin(bones.gaussians.labels.numpy(), bone_labels).all())
    camera = cameras(scene)[0]
    shown, full = render_scene(bones, camera), render_scene(scene, camera)
    assert float(shown.alpha.mean()) < 0.7 * float(full.alpha.mean())  # the skin and organs are gone
    reference, alpha = render_scene_reference(bones, camera)
    assert float(alpha.mean()) < 0.7 * float(render_scene_reference(scene, camera)[1].mean())
    with pytest.raises(RenderFMError, match="mask shows no voxel"):
        prepare_scene(torso.volume, tf, mask=np.zeros(torso.labels.shape, bool), spacing_mm=6.0, device="cpu")


def test_device_and_method_errors(torso):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(RenderFMError, match="device must be"):
        resolve_device("tpu")
    with pytest.raises(RenderFMError, match="method"):
        prepare_scene(torso.volume, get_preset("CT-Bone"), method="magic", spacing_mm=12.0, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            resolve_device("cuda")
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            prepare_scene(torso.volume, get_preset("CT-Bone"), spacing_mm=12.0, device="cuda")


def test_unavailable_backend_is_explained(scene):
    if torch.cuda.is_available():
        pytest.skip("gsplat may be usable here")
    with pytest.raises(BackendUnavailableError, match="gsplat"):
        render_scene(scene, cameras(scene)[0], backend="gsplat")


def test_progress_and_cancel(torso):
    stages = []
    prepare_scene(torso.volume, get_preset("CT-Bone"), spacing_mm=12.0, device="cpu",
                  progress=lambda stage, fraction: stages.append((stage, fraction)))
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    with pytest.raises(InterruptedError):
        prepare_scene(torso.volume, get_preset("CT-Bone"), spacing_mm=12.0, device="cpu", cancel=lambda: True)
