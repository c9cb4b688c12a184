"""Volumes: bad files rejected with messages naming the file and the problem; LPS/RAS and oblique geometry;
resampling and cropping keep physical positions. All files are written to tmp_path with SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from RenderFMLib.errors import VolumeError
from RenderFMLib.volume import Volume, crop_to_body, load_volume, resample, resample_labels, save_volume


def ct_array(shape=(10, 12, 14), seed=0) -> np.ndarray:
    """A small CT-like int16 array [k, j, i]: air around a soft-tissue block with a bright bone voxel."""
    rng = np.random.default_rng(seed)
    a = np.full(shape, -1000, np.int16)
    a[2:-2, 2:-2, 2:-2] = (rng.normal(40, 20, (shape[0] - 4, shape[1] - 4, shape[2] - 4))).astype(np.int16)
    a[shape[0] // 2, shape[1] // 2, shape[2] // 2] = 1200
    return a


def write(path, array, spacing=(1.0, 1.0, 1.0), origin=None, direction=None, vector=False, compress=True):
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    sitk.WriteImage(image, str(path), compress)
    return path


def load_error(path, **kwargs) -> str:
    with pytest.raises(VolumeError) as info:
        load_volume(path, **kwargs)
    message = str(info.value)
    assert str(path) in message, message  # every message names the file
    return message


# ---- bad input ---------------------------------------------------------------------------------------------
def test_good_file_loads(tmp_path):
    volume = load_volume(write(tmp_path / "ct.nii.gz", ct_array()))
    assert volume.shape == (10, 12, 14) and volume.array.dtype == np.float32
    assert volume.name == "ct" and volume.source == str(tmp_path / "ct.nii.gz")
    assert volume.modality_note is None
    assert volume.array.max() == 1200


def test_missing_file(tmp_path):
    assert "no such file or folder" in load_error(tmp_path / "nope.nii.gz")


def test_random_bytes_with_nifti_name(tmp_path):
    path = tmp_path / "noise.nii.gz"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    assert "cannot read this file as a medical image" in load_error(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    assert "cannot read this file as a medical image" in load_error(path)


@pytest.mark.parametrize("name, compress", [("cut.nii.gz", True), ("cut.nii", False)])
def test_truncated_nifti(tmp_path, name, compress):
    full = write(tmp_path / ("full" + name[3:]), ct_array(), compress=compress)
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 2 // 3] if compress else data[:1000])
    assert "truncated" in load_error(path)


@pytest.mark.parametrize("name", ["cut.nrrd", "cut.mha"])
def test_truncated_nrrd_and_mha(tmp_path, name):
    full = write(tmp_path / ("full" + name[3:]), ct_array(), compress=False)
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) - 500])
    assert "voxel data is not" in load_error(path)


def test_2d_image(tmp_path):
    message = load_error(write(tmp_path / "slice.nii.gz", ct_array()[0]))
    assert "expected a 3D volume, got a 2D image" in message and "single slice" in message


def test_4d_image(tmp_path):
    image = sitk.JoinSeries([sitk.GetImageFromArray(ct_array()), sitk.GetImageFromArray(ct_array(seed=1))])
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(image, str(path))
    message = load_error(path)
    assert "4D image" in message and "time series" in message


def test_4d_image_with_one_volume_loads(tmp_path):
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(ct_array())]), str(path))
    assert load_volume(path).shape == (10, 12, 14)


def test_rgb_image(tmp_path):
    rgb = np.zeros((10, 12, 14, 3), np.uint8)
    message = load_error(write(tmp_path / "colour.nrrd", rgb, vector=True))
    assert "3 components per voxel" in message


def test_empty_and_constant(tmp_path):
    assert "empty (all zero)" in load_error(write(tmp_path / "zero.nii.gz", np.zeros((8, 8, 8), np.int16)))
    message = load_error(write(tmp_path / "seven.nii.gz", np.full((8, 8, 8), 7, np.int16)))
    assert "constant (every voxel is 7)" in message


def test_nan_and_inf(tmp_path):
    array = ct_array().astype(np.float32)
    array[1, 2, 3] = np.nan
    array[4, 5, 6] = np.inf
    assert "2 voxel(s) are NaN or Inf" in load_error(write(tmp_path / "bad.nrrd", array))


@pytest.mark.parametrize("spacing", [1e-6, 1e4])
def test_absurd_spacing(tmp_path, spacing):
    message = load_error(write(tmp_path / "sp.nrrd", ct_array(), spacing=(spacing, 1.0, 1.0)))
    assert "absurd voxel spacing" in message and "header is probably wrong" in message


def test_too_large_suggests_coarser_spacing(tmp_path):
    path = write(tmp_path / "big.nii.gz", ct_array(), spacing=(0.5, 0.5, 2.0))
    message = load_error(path, max_voxels=100)
    assert "too large for memory" in message and "1,680 voxels" in message and "limit 100 voxels" in message
    # 1680 voxels into 100 is a factor 16.8 in count, 2.56 in each axis: 2 mm * 2.56 -> about 5.2 mm
    assert "coarser spacing of about 5.2 mm" in message


def test_mri_like_intensities_load_with_a_note(tmp_path):
    rng = np.random.default_rng(2)
    volume = load_volume(write(tmp_path / "t1.nii.gz", (rng.random((10, 12, 14)) * 800).astype(np.int16)))
    assert volume.modality_note is not None and "do not look like CT" in volume.modality_note
    assert volume.describe()["looks_like_ct"] is False


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "notdicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    assert "no DICOM series" in load_error(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no DICOM series" in load_error(empty)


def test_volume_constructor_rejects_bad_arrays():
    with pytest.raises(VolumeError, match="expected a 3D scalar volume"):
        Volume(np.zeros((4, 4)), np.eye(4))
    with pytest.raises(VolumeError, match="too thin"):
        Volume(np.arange(8.0).reshape(1, 2, 4), np.eye(4))
    with pytest.raises(VolumeError, match="degenerate"):
        m = np.eye(4)
        m[:3, 2] = m[:3, 0]
        Volume(np.arange(27.0).reshape(3, 3, 3), m)


# ---- geometry ----------------------------------------------------------------------------------------------
def test_lps_file_becomes_ras(tmp_path):
    """A voxel at a known LPS position ends at (-x, -y, z) in RAS, and array order is [k, j, i]."""
    array = ct_array()
    array[3, 4, 5] = 3000  # (i, j, k) = (5, 4, 3)
    origin_lps = (12.0, -30.0, 7.5)
    spacing = (0.8, 1.5, 2.5)
    direction = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float)  # columns: i -> -L (=R), j -> P
    path = write(tmp_path / "lps.nii.gz", array, spacing=spacing, origin=origin_lps, direction=direction)
    image = sitk.ReadImage(str(path))
    lps = np.array(image.TransformIndexToPhysicalPoint((5, 4, 3)))
    volume = load_volume(path)
    assert volume.array[3, 4, 5] == 3000
    np.testing.assert_allclose(volume.ijk_to_ras_points([5, 4, 3]), [-lps[0], -lps[1], lps[2]], atol=1e-4)
    np.testing.assert_allclose(volume.spacing, spacing, atol=1e-5)
    np.testing.assert_allclose(volume.ras_to_ijk_points([-lps[0], -lps[1], lps[2]]), [5, 4, 3], atol=1e-4)
    # LPS direction columns (0,-1,0) and (1,0,0) become RAS (0,1,0) and (-1,0,0)
    np.testing.assert_allclose(volume.direction, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_round_trip(tmp_path, suffix):
    angle = np.radians(25.0)
    rot_z = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rot_z @ rot_x @ np.diag([0.7, 1.1, 2.9])
    ijk_to_ras[:3, 3] = [-101.5, 33.25, -7.0]
    volume = Volume(ct_array().astype(np.float32), ijk_to_ras, name="oblique")
    path = tmp_path / f"oblique{suffix}"
    save_volume(volume, path)
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-4)


def test_resample_keeps_extent_and_centre():
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.diag([-0.7, -0.9, 2.5])
    ijk_to_ras[:3, 3] = [50.0, 20.0, -30.0]
    volume = Volume(ct_array((16, 40, 30)).astype(np.float32), ijk_to_ras, name="v")
    coarse = resample(volume, 2.0)
    np.testing.assert_allclose(coarse.bounds_ras(), volume.bounds_ras(), atol=1e-6)
    np.testing.assert_allclose(coarse.center_ras(), volume.center_ras(), atol=1e-6)
    np.testing.assert_allclose(coarse.direction, volume.direction, atol=1e-12)
    assert np.all(np.abs(coarse.spacing - 2.0) < 0.5)
    assert coarse.shape == (20, 19, 11)
    fine = resample(volume, 0.5)
    np.testing.assert_allclose(fine.bounds_ras(), volume.bounds_ras(), atol=1e-6)
    # the bright voxel stays where it was (in RAS), within a target voxel
    bright = volume.ijk_to_ras_points(np.argwhere(volume.array == volume.array.max())[0][::-1])
    found = fine.ijk_to_ras_points(np.argwhere(fine.array == fine.array.max())[0][::-1])
    assert np.linalg.norm(bright - found) < 0.5



def test_resample_labels_follows_the_volume_grid_nearest_neighbour():
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.diag([-0.7, -0.9, 2.5])
    volume = Volume(ct_array((16, 40, 30)).astype(np.float32), ijk_to_ras, name="v")
    labels = np.zeros(volume.shape, np.int32)
    labels[4:12, 10:30, 5:25] = 7
    labels[8, 20, 15] = 300  # a lone voxel: nearest neighbour never mixes values
    coarse = resample(volume, 2.0)
    resampled = resample_labels(labels, volume, 2.0)
    assert resampled.shape == coarse.shape and resampled.dtype == np.int32
    assert set(np.unique(resampled)) <= {0, 7, 300} and 7 in resampled
    nearest = resample(Volume(labels + 1.0, ijk_to_ras), 2.0, order="nearest")  # the same voxels
    np.testing.assert_array_equal(nearest.array, resampled + 1.0)
    np.testing.assert_array_equal(resample_labels(labels.astype(np.float32) + 0.02, volume, 2.0), resampled)
    # constant maps (nothing shown) and masks work, though a constant Volume is refused
    assert not resample_labels(np.zeros(volume.shape, bool), volume, 2.0).any()
    assert resample_labels(labels > 0, volume, 2.0).sum() == (resampled > 0).sum()
    same = resample_labels(labels, volume, (0.7, 0.9, 2.5))  # no change of grid: a copy
    np.testing.assert_array_equal(same, labels)
    assert same is not labels and not np.shares_memory(same, labels)
    with pytest.raises(VolumeError, match="does not match"):
        resample_labels(labels[1:], volume, 2.0)

def test_crop_to_body_keeps_ras_positions():
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = np.diag([1.2, -0.8, 2.0])
    ijk_to_ras[:3, 3] = [-10.0, 40.0, 5.0]
    array = np.full((30, 40, 50), -1000.0, np.float32)
    array[8:20, 10:25, 12:40] = 50.0
    array[14, 17, 30] = 1500.0
    volume = Volume(array, ijk_to_ras, name="body")
    cropped = crop_to_body(volume, margin=2)
    assert cropped.shape == (16, 19, 32)
    before = volume.ijk_to_ras_points([30, 17, 14])
    k, j, i = np.argwhere(cropped.array == 1500.0)[0]
    np.testing.assert_allclose(cropped.ijk_to_ras_points([i, j, k]), before, atol=1e-9)
    np.testing.assert_allclose(cropped.spacing, volume.spacing)


DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "dicom" / "abdomen_totalseg").is_dir(), reason="needs ../shared/data")
def test_real_dicom_series_lines_up_with_its_label_map():
    """The DICOM series and its organ label map (a NIfTI stored with the rows in the opposite order) agree once
    the labels are resampled through their geometry onto the volume's grid: labelled voxels are tissue, not air."""
    from RenderFMLib.volume import volume_to_sitk

    volume = load_volume(DATA / "dicom" / "abdomen_totalseg")
    assert volume.shape == (20, 512, 512) and volume.modality_note is None
    # axial CT: i runs to the patient's left (-x in RAS), j to posterior (-y)
    assert volume.direction[0, 0] < -0.9 and volume.direction[1, 1] < -0.9
    labels = sitk.ReadImage(str(DATA / "seg" / "abdomen_dicom_totalseg.labels.nii.gz"))
    on_grid = sitk.Resample(labels, volume_to_sitk(volume), sitk.Transform(), sitk.sitkNearestNeighbor)
    organ = sitk.GetArrayFromImage(on_grid) > 0
    assert organ.sum() > 10000
    assert (volume.array[organ] < -500).mean() < 0.05
