"""VTK ray casting offscreen: orientation of anatomy in the orbit views, emission-absorption and shading numbers
against closed forms, oblique volumes, and the ``renderfm raycast`` command. Real VTK (OSMesa/EGL), no mocks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from RenderFMLib.camera import Camera, orbit_cameras
from RenderFMLib.errors import BackendUnavailableError, RenderFMError
from RenderFMLib.transfer import TransferFunction
from RenderFMLib.volume import Volume, save_volume
from RenderFMLib.vtk_raycast import (
    HEADLIGHT,
    SOFTWARE_RENDERERS,
    VtkRaycaster,
    choose_mapper,
    opengl_renderer,
    render_vtk,
    vtk_light_setup,
)

pytest.importorskip("vtk")

#: RAS centres (mm) of the three objects of :func:`asymmetric_volume`.
LEFT_SUPERIOR_SPHERE = np.array([-50.0, 0.0, 50.0])
RIGHT_INFERIOR_BAR = np.array([50.0, 0.0, -55.0])
ANTERIOR_MARKER = np.array([0.0, 60.0, 0.0])


def asymmetric_volume() -> Volume:
    """Air with a bone sphere at the patient's left-superior, a bar at the right-inferior and a small sphere in
    front (anterior), on a 4 mm grid stored the way CT files are (i towards the patient's left, j posterior)."""
    n = 48
    ijk_to_ras = np.diag([-4.0, -4.0, 4.0, 1.0])
    ijk_to_ras[:3, 3] = [94.0, 94.0, -94.0]  # centre of the grid at RAS (0, 0, 0)
    volume = Volume(np.zeros((n, n, n), np.float32) + np.arange(n)[:, None, None], ijk_to_ras, name="asym")
    k, j, i = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    ras = volume.ijk_to_ras_points(np.stack([i, j, k], axis=-1))
    array = np.full((n, n, n), -1000.0, np.float32)
    array[np.linalg.norm(ras - LEFT_SUPERIOR_SPHERE, axis=-1) < 18] = 1000.0
    bar = (np.abs(ras - RIGHT_INFERIOR_BAR) < [22, 10, 14]).all(axis=-1)
    array[bar] = 700.0
    array[np.linalg.norm(ras - ANTERIOR_MARKER, axis=-1) < 10] = 1000.0
    return volume.with_array(array)


def bone_tf(shade: bool = False) -> TransferFunction:
    return TransferFunction(np.array([[-1000, 1, 1, 1], [1000, 1, 1, 1]]),
                            np.array([[-1000, 0], [200, 0], [300, 1], [1000, 1]]), shade=shade, name="test-bone")


@pytest.fixture(scope="module")
def volume() -> Volume:
    return asymmetric_volume()


def quadrant_coverage(alpha: np.ndarray, margin: int = 5) -> dict[str, float]:
    """Fraction of opaque pixels in each image quadrant, leaving out a central cross ``margin`` pixels wide (where
    the anterior marker projects in front and back views)."""
    h, w = alpha.shape[:2]
    a = alpha[..., 0] > 0.5
    top, bottom, left, right = slice(0, h // 2 - margin), slice(h // 2 + margin, h), slice(0, w // 2 - margin), \
        slice(w // 2 + margin, w)
    return {"top_left": a[top, left].mean(), "top_right": a[top, right].mean(),
            "bottom_left": a[bottom, left].mean(), "bottom_right": a[bottom, right].mean()}


def test_headless_window_and_auto_mapper():
    renderer = opengl_renderer()
    assert renderer  # an OpenGL context exists without a display
    software = any(word in renderer.lower() for word in SOFTWARE_RENDERERS)
    assert choose_mapper("auto") == ("cpu" if software else "gpu")
    assert choose_mapper("gpu") == "gpu" and choose_mapper("cpu") == "cpu"
    with pytest.raises(BackendUnavailableError, match="unknown VTK mapper 'fast'"):
        choose_mapper("fast")


def test_light_setup_is_one_white_headlight():
    import vtk

    renderer = vtk.vtkRenderer()
    vtk_light_setup(renderer)
    lights = [renderer.GetLights().GetItemAsObject(i) for i in range(renderer.GetLights().GetNumberOfItems())]
    assert len(lights) == 1 and lights[0].LightTypeIsHeadlight()
    assert lights[0].GetIntensity() == HEADLIGHT["intensity"]
    assert lights[0].GetAmbientColor() == HEADLIGHT["ambient_color"]
    assert renderer.GetTwoSidedLighting() == 1 and renderer.GetAutomaticLightCreation() == 0


@pytest.mark.parametrize("mapper", ["cpu", "gpu"])
def test_anterior_view_left_superior_object_is_top_right(volume, mapper):
    camera = orbit_cameras(volume.center_ras(), volume.radius_mm(), 4, 96, 80)[0]
    rgb, alpha = render_vtk(volume, bone_tf(), camera, mapper=mapper)
    assert rgb.shape == (80, 96, 3) and alpha.shape == (80, 96, 1)
    assert rgb.dtype == np.float32 and alpha.dtype == np.float32
    assert (rgb <= alpha + 1e-6).all()  # premultiplied
    cover = quadrant_coverage(alpha)
    assert cover["top_right"] > 0.01 and cover["top_left"] == 0  # the left-superior sphere
    assert cover["bottom_left"] > 0.01 and cover["bottom_right"] == 0  # the right-inferior bar
    # each object is where the camera model projects it
    for centre in (LEFT_SUPERIOR_SPHERE, RIGHT_INFERIOR_BAR, ANTERIOR_MARKER):
        (u, v), = camera.project(centre[None])[0]
        assert alpha[int(v), int(u), 0] > 0.9


def test_lateral_and_posterior_views(volume):
    cams = orbit_cameras(volume.center_ras(), volume.radius_mm(), 4, 96, 96)
    tf = bone_tf()
    # view 1 looks from the patient's left: anterior on the image left, superior up
    _, alpha = render_vtk(volume, tf, cams[1], mapper="cpu")
    marker = np.argwhere(alpha[40:56, :, 0] > 0.5)
    assert len(marker) and marker[:, 1].mean() < 48 - 10
    column = alpha[:, 40:56, 0] > 0.5  # the sphere above the centre, the bar (far side) below
    assert column[:40].mean() > 0.02 and column[56:].mean() > 0.02
    # view 3 looks from the right: anterior on the image right
    _, alpha = render_vtk(volume, tf, cams[3], mapper="cpu")
    marker = np.argwhere(alpha[40:56, :, 0] > 0.5)
    assert len(marker) and marker[:, 1].mean() > 48 + 10
    # view 2 looks from behind: the patient's left is on the image left
    _, alpha = render_vtk(volume, tf, cams[2], mapper="cpu")
    cover = quadrant_coverage(alpha)
    assert cover["top_left"] > 0.01 and cover["top_right"] == 0
    assert cover["bottom_right"] > 0.01 and cover["bottom_left"] == 0


def slab_volume(thickness_mm: int = 40) -> Volume:
    """A uniform 100 HU cube of ``thickness_mm`` (1 mm voxels) centred at the origin (one corner voxel differs)."""
    n = thickness_mm + 1
    array = np.full((n, n, n), 100.0, np.float32)
    array[0, 0, 0] = 0.0
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 3] = -thickness_mm / 2
    return Volume(array, ijk_to_ras, name="slab")


FRONT = Camera(position=(0, 200, 0), focal_point=(0, 0, 0), width=64, height=48, parallel_projection=True,
               parallel_scale=30)


@pytest.mark.parametrize("mapper", ["cpu", "gpu"])
@pytest.mark.parametrize("unit_distance, step", [(1.0, None), (1.0, 2.0), (2.0, 0.25)])
def test_uniform_slab_is_emission_absorption_with_opacity_correction(mapper, unit_distance, step):
    colour = np.array([0.2, 0.4, 0.8])
    tf = TransferFunction(np.array([[-1000, *colour], [1000, *colour]]), np.array([[-1000, 0.05], [1000, 0.05]]),
                          unit_distance=unit_distance, shade=False)
    rgb, alpha = render_vtk(slab_volume(), tf, FRONT, mapper=mapper, sample_distance_mm=step)
    expected = 1.0 - 0.95 ** (40.0 / unit_distance)
    centre = alpha[14:34, 22:42, 0]
    assert np.abs(centre - expected).max() < 0.02  # without the correction it would be off by up to 0.23
    np.testing.assert_allclose(rgb[14:34, 22:42], centre[..., None] * colour, atol=0.01)
    assert alpha[:4].max() == 0 and alpha[:, :10].max() == 0  # outside the cube


def test_gpu_mapper_pixel_coverage_matches_the_camera_model():
    """The cube spans [-20, 20] mm = 32 pixels at 0.8 px/mm: columns 16..47 and rows 8..39 (pixel centres)."""
    tf = TransferFunction(np.array([[-1000, 1, 1, 1], [1000, 1, 1, 1]]), np.array([[-1000, 0.05], [1000, 0.05]]),
                          shade=False)
    _, alpha = render_vtk(slab_volume(), tf, FRONT, mapper="gpu")
    covered = alpha[..., 0] > 0.5
    assert np.array_equal(np.nonzero(covered.any(axis=0))[0], np.arange(16, 48))
    assert np.array_equal(np.nonzero(covered.any(axis=1))[0], np.arange(8, 40))
    # the CPU mapper softens the outline: its edge pixels are partly covered, one pixel either way
    _, alpha_cpu = render_vtk(slab_volume(), tf, FRONT, mapper="cpu")
    for axis, (first, last) in ((0, (16, 47)), (1, (8, 39))):
        covered = np.nonzero(alpha_cpu[..., 0].max(axis=axis) > 0.2)[0]
        assert abs(covered.min() - first) <= 1 and abs(covered.max() - last) <= 1


def ramp_volume(tilt_deg: float) -> Volume:
    """HU = 500 - 50 s with s the signed distance (mm) along a unit normal tilted ``tilt_deg`` from anterior
    towards superior: an exactly linear field whose iso-surfaces face the anterior camera at ``tilt_deg``."""
    n = 48
    t = np.radians(tilt_deg)
    k, j, i = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    s = (j - (n - 1) / 2) * np.cos(t) + (k - (n - 1) / 2) * np.sin(t)
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 3] = -(n - 1) / 2
    return Volume(np.clip(500 - 50 * s, 0, 1000).astype(np.float32), ijk_to_ras, name="ramp")


@pytest.mark.parametrize("mapper", ["cpu", "gpu"])
@pytest.mark.parametrize("tilt", [0.0, 45.0, 60.0])
def test_shading_follows_the_documented_headlight_model(mapper, tilt):
    colour = np.array([0.8, 0.6, 0.4])
    camera = Camera(position=(0, 300, 0), focal_point=(0, 0, 0), width=32, height=32, parallel_projection=True,
                    parallel_scale=10)
    volume = ramp_volume(tilt)
    cos_t = np.cos(np.radians(tilt))
    for ambient, diffuse, specular in ((0.2, 0.8, 0.0), (0.1, 0.0, 0.5)):
        tf = TransferFunction(np.array([[0, *colour], [1000, *colour]]), np.array([[0, 0], [400, 0], [500, 1]]),
                              shade=True, ambient=ambient, diffuse=diffuse, specular=specular, specular_power=4)
        rgb, alpha = render_vtk(volume, tf, camera, mapper=mapper, sample_distance_mm=0.25)
        highlight = cos_t if mapper == "cpu" else max(0.0, np.cos(2 * np.radians(tilt)))
        expected = colour * (ambient + diffuse * cos_t) + specular * highlight ** 4
        assert alpha[16, 16, 0] > 0.99
        np.testing.assert_allclose(rgb[16, 16], expected, atol=0.012)


@pytest.mark.parametrize("mapper", ["cpu", "gpu"])
def test_oblique_and_left_handed_volumes_are_placed_exactly(mapper):
    from scipy.spatial.transform import Rotation

    blob = np.array([12.0, -15.0, 20.0])
    camera = Camera(position=(30, 250, 60), focal_point=(0, 0, 0), width=96, height=80)
    for seed, handed in ((0, 1.0), (1, -1.0)):
        direction = Rotation.random(random_state=seed).as_matrix()
        direction[:, 2] *= handed
        ijk_to_ras = np.eye(4)
        ijk_to_ras[:3, :3] = direction * np.array([2.0, 1.7, 2.3])
        ijk_to_ras[:3, 3] = -direction @ np.array([40.0, 34.0, 46.0])
        grid = Volume(np.arange(40.0**3, dtype=np.float32).reshape(40, 40, 40), ijk_to_ras)
        k, j, i = np.meshgrid(*[np.arange(40)] * 3, indexing="ij")
        distance = np.linalg.norm(grid.ijk_to_ras_points(np.stack([i, j, k], -1)) - blob, axis=-1)
        volume = grid.with_array(np.where(distance < 5, 1000.0, -1000.0).astype(np.float32))
        _, alpha = render_vtk(volume, bone_tf(), camera, mapper=mapper)
        rows, cols = np.nonzero(alpha[..., 0] > 0.5)
        (u, v), = camera.project(blob[None])[0]
        assert abs(cols.mean() + 0.5 - u) < 0.5 and abs(rows.mean() + 0.5 - v) < 0.5


@pytest.mark.parametrize("mapper", ["cpu", "gpu"])
def test_raycaster_reuses_the_volume_for_many_views_and_tfs(volume, mapper):
    cams = orbit_cameras(volume.center_ras(), volume.radius_mm(), 3, 64, 64)
    white, red = bone_tf(shade=True), bone_tf(shade=False)
    red.color_points[:, 1:] = [1.0, 0.0, 0.0]
    with VtkRaycaster(volume, white, mapper=mapper) as raycaster:
        assert raycaster.mapper == mapper and raycaster.sample_distance_mm == 2.0  # half of the 4 mm voxels
        for camera in cams:
            rgb, alpha = raycaster.render(camera)
            one_shot = render_vtk(volume, white, camera, mapper=mapper)
            np.testing.assert_allclose(rgb, one_shot[0], atol=1 / 255)
            np.testing.assert_allclose(alpha, one_shot[1], atol=1 / 255)
        raycaster.set_transfer_function(red)
        rgb, alpha = raycaster.render(cams[0])
    opaque = alpha[..., 0] > 0.9
    assert opaque.any() and rgb[opaque][:, 0].min() > 0.9 and rgb[..., 1:].max() == 0


def test_bad_sample_distance(volume):
    with pytest.raises(RenderFMError, match="sample distance must be a positive number of mm"):
        render_vtk(volume, bone_tf(), FRONT, mapper="cpu", sample_distance_mm=0)


def test_cli_writes_views_and_json(tmp_path, capsys):
    from RenderFMLib.cli import main
    from RenderFMLib.image import load_png_linear

    path = tmp_path / "asym.nii.gz"
    save_volume(asymmetric_volume(), path)
    out = tmp_path / "views"
    code = main(["raycast", str(path), "--preset", "CT-Bones", "--views", "3", "--size", "64x48", "--out", str(out),
                 "--mapper", "cpu", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["volume"] == str(path) and report["preset"] == "CT-Bones" and report["views"] == 3
    assert report["size"] == [64, 48] and report["mapper"] == "cpu"
    assert report["seconds_per_view"] > 0 and report["seconds_first_view"] > 0
    assert report["files"] == [str(out / f"view_{i:03d}.png") for i in range(3)]
    front = load_png_linear(report["files"][0])
    assert front.shape == (48, 64, 3)
    # anterior view: the left-superior sphere is top right, nothing top left
    bright = front.max(axis=-1) > 0.1
    assert bright[:20, 36:].mean() > 0.01 and not bright[:20, :28].any()


def test_cli_reads_a_vp_json_transfer_function(tmp_path, capsys):
    from RenderFMLib.cli import main
    from RenderFMLib.transfer_io import write_vp_json

    tf_path = write_vp_json(bone_tf(shade=True), tmp_path / "bone.vp.json")
    path = tmp_path / "asym.mha"
    save_volume(asymmetric_volume(), path)
    code = main(["raycast", str(path), "--tf", str(tf_path), "--views", "1", "--size", "32", "--out",
                 str(tmp_path / "v"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["views"] == 1 and report["size"] == [32, 32]
    assert (tmp_path / "v" / "view_000.png").is_file()


def test_cli_reports_bad_input(tmp_path, capsys):
    from RenderFMLib.cli import main

    code = main(["raycast", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "missing.nii.gz: no such file or folder" in capsys.readouterr().err
    path = tmp_path / "asym.nrrd"
    save_volume(asymmetric_volume(), path)
    code = main(["raycast", str(path), "--preset", "No-Such-Preset", "--out", str(tmp_path / "o")])
    assert code == 1
    assert "No-Such-Preset" in capsys.readouterr().err
