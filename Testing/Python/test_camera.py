"""Cameras: projection against VTK's own camera, VTK round trip, rays, orbit orientation, degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from RenderFMLib import vtk_raycast  # noqa: F401  (sets the headless OpenGL window before VTK makes one)
from RenderFMLib.camera import Camera, orbit_cameras, parse_size, sphere_cameras
from RenderFMLib.errors import CameraError

vtk = pytest.importorskip("vtk")


def random_camera(rng: np.random.Generator, parallel: bool, width: int, height: int) -> Camera:
    position = rng.uniform(-400, 400, 3)
    focal = rng.uniform(-100, 100, 3)
    up = rng.normal(size=3)
    return Camera(position=tuple(position), focal_point=tuple(focal), view_up=tuple(up),
                  view_angle_deg=float(rng.uniform(10, 80)), width=width, height=height,
                  parallel_projection=parallel, parallel_scale=float(rng.uniform(20, 300)))


def vtk_display_pixels(camera: Camera, points: np.ndarray) -> np.ndarray:
    """VTK's own projection of RAS points into (u, v) with v from the top.

    ``vtkRenderer.WorldToDisplay`` gives continuous display coordinates with x in [0, W] from the left edge and y in
    [0, H] from the bottom edge (``ViewToDisplay``: ``(ndc + 1) / 2 * size``, no half-pixel offset), so pixel
    ``c`` spans ``[c, c + 1)`` as in RenderFM's convention; only y needs flipping: ``v = H - y``.
    """
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(camera.width, camera.height)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    camera.to_vtk(renderer.GetActiveCamera())
    out = []
    for point in points:
        renderer.SetWorldPoint(*point, 1.0)
        renderer.WorldToDisplay()
        x, y, _ = renderer.GetDisplayPoint()
        out.append((x, camera.height - y))
    return np.array(out)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("size", [(256, 256), (320, 192), (150, 260)])
def test_projection_matches_vtk(parallel, size):
    rng = np.random.default_rng(hash((parallel, size)) % 2**32)
    for _ in range(10):
        camera = random_camera(rng, parallel, *size)
        # points in front of the camera, spread over (and beyond) the view
        w2c = camera.world_to_camera()
        cam_pts = np.column_stack([rng.uniform(-1, 1, (20, 2)) * 150, rng.uniform(50, 600, 20)])
        world = (cam_pts - w2c[:3, 3]) @ w2c[:3, :3]
        ours, depth = camera.project(world)
        np.testing.assert_allclose(depth, cam_pts[:, 2], atol=1e-6)
        theirs = vtk_display_pixels(camera, world)
        assert np.abs(ours - theirs).max() < 0.5, (camera, np.abs(ours - theirs).max())
        # the agreement is in fact exact up to floating point
        assert np.abs(ours - theirs).max() < 1e-4


def test_focal_point_projects_to_image_centre_and_up_is_up():
    camera = Camera(position=(0, 500, 0), focal_point=(0, 0, 0), view_up=(0, 0, 1), width=200, height=100)
    uv, z = camera.project(np.array([[0, 0, 0], [0, 0, 50], [-50, 0, 0]]))
    np.testing.assert_allclose(uv[0], [100, 50])
    assert z[0] == pytest.approx(500)
    assert uv[1, 1] < 50  # superior is up (smaller row)
    assert uv[2, 0] > 100  # from the front, -x (patient's left) is on the image right


@pytest.mark.parametrize("parallel", [False, True])
def test_vtk_round_trip(parallel):
    rng = np.random.default_rng(3)
    for _ in range(5):
        camera = random_camera(rng, parallel, 300, 200)
        vtk_camera = vtk.vtkCamera()
        camera.to_vtk(vtk_camera)
        back = Camera.from_vtk(vtk_camera, 300, 200)
        np.testing.assert_allclose(back.world_to_camera(), camera.world_to_camera(), atol=1e-9)
        np.testing.assert_allclose(back.intrinsics(), camera.intrinsics(), atol=1e-9)
        assert back.parallel_projection == parallel
        # view-up comes back orthogonalised: perpendicular to the view direction, still on the same side
        forward = np.array(back.focal_point) - np.array(back.position)
        assert abs(np.dot(back.view_up, forward)) < 1e-9 * np.linalg.norm(forward)
        assert np.dot(back.view_up, camera.view_up) > 0
        assert Camera.from_dict(back.to_dict()) == back


def test_world_to_camera_is_rigid_and_right_handed():
    rng = np.random.default_rng(4)
    for _ in range(20):
        camera = random_camera(rng, bool(rng.integers(2)), 64, 64)
        m = camera.world_to_camera()
        r = m[:3, :3]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(m[3], [0, 0, 0, 1])
        np.testing.assert_allclose(m @ np.append(camera.position, 1.0), [0, 0, 0, 1], atol=1e-9)
        # the focal point is straight ahead (+z), at the camera distance
        np.testing.assert_allclose(m @ np.append(camera.focal_point, 1.0), [0, 0, camera.distance, 1], atol=1e-9)


@pytest.mark.parametrize("parallel", [False, True])
def test_pixel_rays_hit_their_pixel_centres(parallel):
    rng = np.random.default_rng(5)
    camera = random_camera(rng, parallel, 48, 32)
    origins, directions = camera.pixel_rays()
    assert origins.shape == directions.shape == (32, 48, 3)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-12)
    rows, cols = np.meshgrid(np.arange(32), np.arange(48), indexing="ij")
    for t in (10.0, 250.0):
        uv, depth = camera.project((origins + t * directions).reshape(-1, 3))
        np.testing.assert_allclose(uv[:, 0], cols.ravel() + 0.5, atol=1e-7)
        np.testing.assert_allclose(uv[:, 1], rows.ravel() + 0.5, atol=1e-7)
        assert (depth > 0).all()
    if parallel:
        np.testing.assert_allclose(directions, np.broadcast_to(camera.basis()[2], directions.shape))
    else:
        np.testing.assert_allclose(origins, np.broadcast_to(camera.center, origins.shape))


def test_orbit_view0_is_anterior_superior_up_left_on_right():
    center = np.array([10.0, -20.0, 30.0])
    cams = orbit_cameras(center, 100.0, 4, 128, 96)
    view = cams[0]
    assert np.array(view.position)[1] > center[1]  # in front of the patient
    np.testing.assert_allclose(view.basis()[2], [0, -1, 0], atol=1e-12)  # looking posterior
    uv, _ = view.project(np.array([center, center + [0, 0, 50], center + [-50, 0, 0], center + [50, 0, 0]]))
    np.testing.assert_allclose(uv[0], [64, 48], atol=1e-9)
    assert uv[1, 1] < 48 and abs(uv[1, 0] - 64) < 1e-9  # superior straight up
    assert uv[2, 0] > 64 and uv[3, 0] < 64  # patient's left (-x) on the image right, right (+x) on the left
    # every view sees the whole bounding sphere
    for cam in cams:
        assert cam.distance * math.sin(math.radians(cam.view_angle_deg) / 2) >= 100.0


def test_orbit_view_at_90_degrees_looks_from_the_left():
    center = np.zeros(3)
    view = orbit_cameras(center, 50.0, 4)[1]
    assert view.position[0] < -50  # on the patient's left (-x)
    np.testing.assert_allclose(view.basis()[2], [1, 0, 0], atol=1e-12)
    uv, _ = view.project(np.array([[0, 30, 0], [0, -30, 0], [0, 0, 30]]))
    assert uv[0, 0] < 128 < uv[1, 0]  # anterior on the image left, posterior on the right
    assert uv[2, 1] < 128


def test_orbit_elevation_and_sphere_cameras_look_at_centre():
    center = np.array([1.0, 2.0, 3.0])
    for cam in orbit_cameras(center, 80, 3, elevation_deg=30) + sphere_cameras(center, 80, 7, seed=2):
        uv, z = cam.project(center[None])
        np.testing.assert_allclose(uv[0], [128, 128], atol=1e-9)
        assert z[0] > 80
    top = orbit_cameras(center, 80, 1, elevation_deg=30)[0]
    assert top.position[2] > center[2]


@pytest.mark.parametrize("kwargs, message", [
    (dict(position=(1, 2, 3), focal_point=(1, 2, 3)), "position and focal point coincide"),
    (dict(position=(0, 0, 10), focal_point=(0, 0, 0), view_up=(0, 0, 1)), "view-up is parallel"),
    (dict(position=(0, 10, 0), focal_point=(0, 0, 0), width=0), "image size must be positive"),
    (dict(position=(0, 10, 0), focal_point=(0, 0, 0), view_angle_deg=0), "view angle must be in (0, 180)"),
    (dict(position=(0, 10, 0), focal_point=(0, 0, 0), view_angle_deg=180), "view angle must be in (0, 180)"),
    (dict(position=(0, 10, 0), focal_point=(0, 0, 0), parallel_projection=True, parallel_scale=0),
     "parallel scale must be positive"),
    (dict(position=(0, float("nan"), 0), focal_point=(0, 0, 0)), "camera position must be 3 finite numbers"),
    (dict(position=(0, 10), focal_point=(0, 0, 0)), "camera position must be 3 finite numbers"),
])
def test_degenerate_cameras_raise_clear_errors(kwargs, message):
    with pytest.raises(CameraError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Camera(**kwargs)


def test_view_generators_and_size_parsing_errors():
    with pytest.raises(CameraError, match="number of views must be at least 1"):
        orbit_cameras(np.zeros(3), 10, 0)
    with pytest.raises(CameraError, match="number of views must be at least 1"):
        sphere_cameras(np.zeros(3), 10, 0)
    assert parse_size("320x200") == (320, 200)
    assert parse_size("64") == (64, 64)
    for bad in ("abc", "0x10", "10x10x10", "9000x10", "-5x5"):
        with pytest.raises(CameraError, match="image size must"):
            parse_size(bad)
