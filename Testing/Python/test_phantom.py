"""Tests of the procedural CT torso phantom: determinism, HU per structure, orientation, geometry, loading."""

from __future__ import annotations

import time

import numpy as np
import pytest

from RenderFMLib.errors import VolumeError
from RenderFMLib.phantom import LABEL_NAMES, Phantom, make_phantom, phantom_orientation_markers
from RenderFMLib.volume import Volume, load_volume

# Expected median HU of each structure at 3 mm (partial volume included): (low, high).
HU_BANDS = {
    "air/background": (-1010, -990), "skin": (-400, 60), "fat": (-120, -60), "muscle": (30, 60),
    "lung": (-900, -800), "heart": (25, 60), "blood_pool": (150, 350), "aorta": (250, 330), "liver": (50, 70),
    "spleen": (40, 60), "kidney_left": (60, 160), "kidney_right": (60, 160), "vertebra": (250, 1000),
    "rib": (250, 900), "sternum": (200, 900), "disc": (60, 200), "spinal_canal": (0, 40), "airway": (-1000, -400),
    "esophagus": (20, 60), "stomach": (-100, 60), "bowel": (0, 60), "colon": (-1000, -200), "pancreas": (35, 55),
    "gallbladder": (0, 25), "vena_cava": (60, 200), "pulmonary_artery": (150, 250), "portal_vein": (100, 200),
    "costal_cartilage": (80, 130), "scapula": (200, 900), "clavicle": (200, 900), "pelvis": (200, 900),
}


def test_every_structure_has_a_band_and_voxels(phantom: Phantom):
    assert set(HU_BANDS) == set(LABEL_NAMES.values())
    present = set(np.unique(phantom.labels).tolist())
    missing = [name for value, name in phantom.label_names.items() if value not in present]
    assert not missing, f"structures without voxels at 3 mm: {missing}"


@pytest.mark.parametrize("name", sorted(HU_BANDS))
def test_median_hu_per_structure(phantom: Phantom, name: str):
    lo, hi = HU_BANDS[name]
    median = float(np.median(phantom.volume.array[phantom.mask(name)]))
    assert lo <= median <= hi, f"{name}: median {median:.0f} HU outside [{lo}, {hi}]"


def test_geometry_is_ras_axis_aligned_and_centred(phantom: Phantom):
    volume = phantom.volume
    assert isinstance(volume, Volume) and volume.name == "phantom"
    assert phantom.labels.shape == volume.shape and phantom.labels.dtype == np.uint8
    assert volume.array.dtype == np.float32
    assert volume.shape == (133, 87, 120)  # (k, j, i) for 400 x 260 x 360 mm at 3 mm
    np.testing.assert_allclose(volume.ijk_to_ras[:3, :3], np.diag([3.0, 3.0, 3.0]))
    np.testing.assert_allclose(volume.center_ras(), 0.0, atol=1e-9)
    assert volume.modality_note is None  # looks like CT
    assert -1024.0 <= volume.array.min() and volume.array.max() <= 3071.0


def test_orientation_markers_show_the_asymmetry(phantom: Phantom):
    m = phantom_orientation_markers(phantom)
    assert set(m) >= {"heart", "liver", "spleen", "stomach", "spine", "sternum", "kidney_left", "kidney_right",
                      "lungs"}
    assert all(v.shape == (3,) for v in m.values())
    # Left/right (RAS x: + is the patient's right).
    assert m["heart"][0] < -10.0
    assert m["liver"][0] > 30.0
    assert m["spleen"][0] < -50.0 and m["stomach"][0] < -20.0
    assert m["kidney_left"][0] < -40.0 < 40.0 < m["kidney_right"][0]
    # Superior/inferior: lungs and heart above the kidneys; the left kidney higher than the right.
    assert m["lungs"][2] > m["kidney_left"][2] + 120.0
    assert m["heart"][2] > m["liver"][2] + 40.0
    assert m["kidney_left"][2] > m["kidney_right"][2]
    # Anterior/posterior: sternum in front of the spine, heart in front of the spine.
    assert m["sternum"][1] > m["spine"][1] + 100.0
    assert m["heart"][1] > m["spine"][1] + 50.0
    # The array agrees with the markers: i increases towards the patient's right.
    heart_i = np.argwhere(phantom.mask("heart", "blood_pool"))[:, 2].mean()
    liver_i = np.argwhere(phantom.mask("liver"))[:, 2].mean()
    assert heart_i < phantom.volume.shape[2] / 2 < liver_i


def test_descending_aorta_is_left_of_the_spine_and_gas_floats(phantom: Phantom):
    volume = phantom.volume
    kji = np.argwhere(phantom.mask("aorta"))
    ras = volume.ijk_to_ras_points(kji[:, ::-1].astype(float))
    thoracic = ras[(ras[:, 2] > 0) & (ras[:, 2] < 100)]
    assert thoracic[:, 0].mean() < -10.0
    # Air-fluid level in the stomach: gas above the content.
    stomach = phantom.mask("stomach")
    z = volume.ijk_to_ras_points(np.argwhere(stomach)[:, ::-1].astype(float))[:, 2]
    hu = volume.array[stomach]
    assert z[hu < -500].mean() > z[hu > -100].mean() + 10.0


def test_deterministic_for_a_seed():
    a = make_phantom(seed=3, spacing_mm=6.0)
    b = make_phantom(seed=3, spacing_mm=6.0)
    np.testing.assert_array_equal(a.volume.array, b.volume.array)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.volume.ijk_to_ras, b.volume.ijk_to_ras)


def test_seeds_differ_slightly():
    a = make_phantom(seed=0, spacing_mm=6.0)
    b = make_phantom(seed=1, spacing_mm=6.0)
    assert a.volume.shape == b.volume.shape
    assert not np.array_equal(a.volume.array, b.volume.array)
    assert not np.array_equal(a.labels, b.labels)
    assert np.mean(a.labels == b.labels) > 0.9  # the same anatomy, a little perturbed
    ma, mb = phantom_orientation_markers(a), phantom_orientation_markers(b)
    for key in ma:
        assert np.linalg.norm(ma[key] - mb[key]) < 12.0, key


def test_anatomy_does_not_depend_on_spacing(phantom: Phantom, small_volume: Volume):
    coarse = make_phantom(seed=0, spacing_mm=6.0)
    np.testing.assert_array_equal(coarse.volume.array, small_volume.array)
    m3, m6 = phantom_orientation_markers(phantom), phantom_orientation_markers(coarse)
    for key in m3:
        assert np.linalg.norm(m3[key] - m6[key]) < 5.0, key


def test_anisotropic_spacing_and_custom_field_of_view():
    ph = make_phantom(seed=0, spacing_mm=(4.0, 5.0, 8.0), size_mm=(200, 200, 240))
    assert ph.volume.shape == (30, 40, 50)
    np.testing.assert_allclose(ph.volume.spacing, [4.0, 5.0, 8.0])
    np.testing.assert_allclose(ph.volume.center_ras(), 0.0, atol=1e-9)
    assert ph.labels.shape == ph.volume.shape


@pytest.mark.parametrize("kwargs", [{"spacing_mm": 0.0}, {"spacing_mm": -1.0}, {"spacing_mm": float("nan")},
                                    {"size_mm": (2.0, 260, 400)}, {"spacing_mm": 0.1}, {"seed": -1},
                                    {"seed": 1.5}])
def test_bad_arguments_raise_volume_error(kwargs):
    with pytest.raises(VolumeError, match="phantom"):
        make_phantom(**kwargs)


def test_mask_and_label_lookup(phantom: Phantom):
    assert phantom.label_id("liver") == 8
    heart = phantom.mask("heart", "blood_pool")
    assert heart.shape == phantom.labels.shape and heart.dtype == bool
    assert heart.sum() == phantom.mask("heart").sum() + phantom.mask("blood_pool").sum()
    with pytest.raises(VolumeError, match="known: air/background, skin"):
        phantom.mask("appendix")


def test_load_volume_phantom_and_default_build():
    start = time.perf_counter()
    built = make_phantom(seed=2)
    elapsed = time.perf_counter() - start
    print(f"phantom at 2 mm: {built.volume.shape} voxels built in {elapsed:.2f} s")
    assert built.volume.shape == (200, 130, 180)
    loaded = load_volume("phantom:2")
    assert loaded.name == "phantom"
    np.testing.assert_array_equal(loaded.array, built.volume.array)
    np.testing.assert_array_equal(loaded.ijk_to_ras, built.volume.ijk_to_ras)


def test_markers_in_an_anterior_view(phantom: Phantom):
    from RenderFMLib.camera import orbit_cameras

    volume = phantom.volume
    anterior = orbit_cameras(volume.center_ras(), volume.radius_mm(), 4, width=64, height=64)[0]
    m = phantom_orientation_markers(phantom)
    keys = ["heart", "liver", "lungs", "kidney_left", "sternum", "spine"]
    uv, depth = anterior.project(np.stack([m[k] for k in keys]))
    px = dict(zip(keys, uv, strict=True))
    z = dict(zip(keys, depth, strict=True))
    assert px["heart"][0] > 32 > px["liver"][0]  # patient's left on the image's right
    assert px["lungs"][1] < px["kidney_left"][1]  # superior up
    assert z["sternum"] < z["spine"]  # the sternum faces the camera
