"""The Render-FM network: zero-initialised residuals, patch inference, safetensors weights with a checked header."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from RenderFMLib.model.features import FEATURE_NAMES, make_features
from RenderFMLib.model.predict import apply_residuals, predict_residuals
from RenderFMLib.model.unet import RenderFMUNet, UNetConfig, residual_channels, residual_layout
from RenderFMLib.model.weights import ModelHeader, WeightsError, load_model, read_header, save_model
from RenderFMLib.presets import get_preset

SMALL = UNetConfig(widths=(4, 8), sh_degree=1)


def test_residual_layout_matches_6dgs_parameter_count():
    assert residual_channels(3) == 76  # 3 + 6 + 15 + 3 + 48 + 1, as in 6DGS's PLY layout
    layout = residual_layout(3)
    assert list(layout) == ["position", "chol_log_diag", "chol_offdiag", "dir_mean", "sh", "opacity"]
    assert layout["sh"] == (27, 75)


def test_features_channels(small_volume):
    tf = get_preset("CT-Bone")
    hu = torch.from_numpy(small_volume.array)
    features = make_features(hu, tf)
    assert features.shape == (len(FEATURE_NAMES),) + small_volume.shape
    assert torch.all(features[5] == 1)
    mask = np.zeros(small_volume.shape, np.uint8)
    mask[:, :, : small_volume.shape[2] // 2] = 1
    masked = make_features(hu, tf, torch.from_numpy(mask))
    assert float(masked[5].mean()) == pytest.approx(mask.mean())
    assert torch.allclose(masked[4], tf.opacity(hu))


def test_untrained_model_predicts_zero_residuals_so_it_renders_like_analytic(small_volume):
    from RenderFMLib.analytic import analytic_gaussians
    from RenderFMLib.volume import resample

    volume = resample(small_volume, 12.0)  # 34x22x31 voxels: still 18 overlapping 16-voxel patches
    tf = get_preset("CT-Bone")
    analytic = analytic_gaussians(volume, tf)
    assert len(analytic.gaussians) > 1000
    model = RenderFMUNet(SMALL)
    features = make_features(torch.from_numpy(volume.array), tf)
    residuals = predict_residuals(model, features, analytic.voxel_index, patch=16, overlap=4)
    assert residuals.shape == (len(analytic.gaussians), residual_channels(1))
    assert torch.count_nonzero(residuals) == 0
    predicted = apply_residuals(analytic.gaussians, residuals, 12.0, sh_degree=1)
    base = analytic.gaussians.with_sh_degree(1)
    for name in ("means", "dir_means", "chol_log_diag", "chol_offdiag", "sh", "opacity_logit"):
        assert torch.equal(getattr(predicted, name), getattr(base, name))


def test_patch_inference_covers_every_voxel_and_matches_one_patch_when_it_fits():
    torch.manual_seed(0)
    model = RenderFMUNet(SMALL).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    features = torch.randn(6, 20, 18, 22)
    index = torch.arange(20 * 18 * 22)
    whole = predict_residuals(model, features, index, patch=64)
    tiled = predict_residuals(model, features, index, patch=8, overlap=4)
    assert torch.isfinite(tiled).all() and tiled.abs().sum() > 0
    with torch.no_grad():
        padded = torch.nn.functional.pad(features[None], (0, 0, 0, 0, 0, 0), mode="replicate")
        direct = model(padded)[0].reshape(whole.shape[1], -1).T
    assert torch.allclose(whole, direct, atol=1e-5)
    # Instance norm sees different statistics per patch, so tiles differ from the whole, but not wildly.
    assert float((tiled - whole).abs().mean()) < float(whole.abs().mean())


def test_patch_inference_can_be_cancelled():
    model = RenderFMUNet(SMALL)
    with pytest.raises(InterruptedError):
        predict_residuals(model, torch.zeros(6, 16, 16, 16), torch.arange(10), patch=8, overlap=0,
                          cancel=lambda: True)


def test_weights_round_trip_and_header(tmp_path):
    torch.manual_seed(1)
    model = RenderFMUNet(SMALL)
    torch.nn.init.normal_(model.head.weight)
    path = save_model(model, ModelHeader(SMALL, 3.0, training={"steps": 5}), tmp_path / "m.safetensors")
    header = read_header(path)
    assert header.architecture == SMALL and header.working_spacing_mm == 3.0 and header.training["steps"] == 5
    loaded, _ = load_model(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def test_weights_loader_refuses_bad_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_model(corrupt)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsError, match="no RenderFM header"):
        load_model(plain)
    model = RenderFMUNet(SMALL)
    good = save_model(model, ModelHeader(SMALL, 3.0), tmp_path / "good.safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()["renderfm"])
    for change, message in ((dict(format_version=99), "version 99 is not supported"),
                            (dict(format="other"), "is not 'renderfm-unet'")):
        bad = tmp_path / "bad.safetensors"
        save_file(tensors, str(bad), metadata={"renderfm": json.dumps({**meta, **change})})
        with pytest.raises(WeightsError, match=message):
            load_model(bad)
    wrong = tmp_path / "wrong.safetensors"
    other = {**meta, "architecture": {**meta["architecture"], "widths": [4, 8, 16]}}
    save_file(tensors, str(wrong), metadata={"renderfm": json.dumps(other)})
    with pytest.raises(WeightsError, match="do not match the declared architecture"):
        load_model(wrong)
    tensors["head.bias"][0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(tensors, str(nan), metadata={"renderfm": json.dumps(meta)})
    with pytest.raises(WeightsError, match="NaN"):
        load_model(nan)
