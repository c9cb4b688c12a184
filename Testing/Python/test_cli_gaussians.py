"""``renderfm render / compare / optimize / export``: real files in, PNG/PLY files and JSON out."""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest

from RenderFMLib.cli import main
from RenderFMLib.ply import read_6dgs_ply

pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory, small_volume):
    """The small phantom written as a NIfTI file (commands read it from disk)."""
    from RenderFMLib.volume import save_volume

    path = tmp_path_factory.mktemp("ct") / "torso.nii.gz"
    save_volume(small_volume, path)
    return str(path)


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_render_writes_views_and_reports_speed(capsys, tmp_path, ct_file):
    summary = run_json(capsys, ["render", ct_file, "--preset", "CT-Bone", "--spacing", "12", "--device", "cpu",
                                "--views", "2", "--size", "48x40", "--out", str(tmp_path / "views"), "--json"])
    assert summary["method"] == "analytic" and summary["backend"] == "cpu-fast" and summary["device"] == "cpu"
    assert summary["gaussians"] == summary["counts"]["kept"] > 100 and summary["spacing_mm"] == 12.0
    assert summary["views"] == 2 and summary["size"] == [48, 40] and summary["fps"] > 0 and summary["prep_s"] > 0
    for name in ("view_000.png", "view_001.png"):
        image = iio.imread(tmp_path / "views" / name)
        assert image.shape == (40, 48, 3) and image.max() > 50
    assert main(["render", ct_file, "--spacing", "12", "--device", "cpu", "--views", "1", "--size", "32",
                 "--backend", "torch", "--out", str(tmp_path / "torch"), "--quiet"]) == 0
    assert "1 views with torch" in capsys.readouterr().out


def test_compare_writes_side_by_side_images_and_exact_json(capsys, tmp_path, ct_file):
    summary = run_json(capsys, ["compare", ct_file, "--preset", "CT-Bone", "--spacing", "12", "--device", "cpu",
                                "--views", "2", "--size", "48x40", "--out", str(tmp_path), "--json"])
    assert list(summary) == ["views", "size", "reference", "methods"]
    assert summary["views"] == 2 and summary["size"] == [48, 40] and summary["reference"] == "cinematic"
    assert {"vtk", "analytic"} <= set(summary["methods"])
    for values in summary["methods"].values():
        assert 5.0 < values["psnr"] < 60.0 and 0.0 < values["ssim"] <= 1.0 and len(values["per_view_psnr"]) == 2
    panels = len(summary["methods"]) + 1  # methods plus the reference
    image = iio.imread(tmp_path / "compare_001.png")
    assert image.shape[1] == panels * 48 + (panels - 1) * 4 and image.shape[0] > 40
    caption = image[: image.shape[0] - 40]
    assert caption.max() > 200  # the captions hold text


def test_optimize_writes_a_6dgs_ply_and_reports_psnr(capsys, tmp_path, ct_file):
    out = tmp_path / "scene.ply"
    summary = run_json(capsys, ["optimize", ct_file, "--spacing", "16", "--device", "cpu", "--views", "3",
                                "--held-out", "1", "--size", "32x32", "--iters", "3", "--sh-degree", "1",
                                "--out", str(out), "--json"])
    assert summary["init"] == "analytic" and summary["iterations"] == 3 and summary["views"] == 3
    assert summary["psnr_before"] > 5.0 and summary["psnr_after"] > 5.0 and len(summary["curve"]) >= 1
    gaussians, lam = read_6dgs_ply(out)
    assert len(gaussians) == summary["gaussians"] and gaussians.sh_degree == 1 and lam == pytest.approx(0.35)
    summary = run_json(capsys, ["optimize", ct_file, "--spacing", "16", "--device", "cpu", "--views", "2",
                                "--size", "24", "--iters", "1", "--init", "random", "--out", str(out), "--json"])
    assert summary["init"] == "random" and summary["iterations"] == 1


def test_export_from_a_volume_and_from_a_ply(capsys, tmp_path, ct_file):
    six = tmp_path / "six.ply"
    summary = run_json(capsys, ["export", ct_file, "--spacing", "12", "--device", "cpu", "--out", str(six), "--json"])
    assert summary["format"] == "6dgs" and summary["method"] == "analytic" and summary["bytes"] > 1000
    gaussians, _ = read_6dgs_ply(six)
    assert len(gaussians) == summary["gaussians"]
    three = tmp_path / "three.ply"
    summary = run_json(capsys, ["export", str(six), "--format", "3dgs", "--view-direction", "0,0,-2",
                                "--out", str(three), "--json"])
    assert summary["method"] == "ply" and summary["view_direction"] == [0.0, 0.0, -1.0]
    header = three.read_bytes()[:4000].split(b"end_header")[0].decode()
    assert f"element vertex {summary['gaussians']}" in header and "property float rot_0" in header
    assert main(["export", str(six), "--format", "3dgs", "--view-direction", "1,2", "--out", str(three)]) == 1
    assert "view-direction" in capsys.readouterr().err
