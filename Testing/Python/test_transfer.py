"""Transfer functions: VTK evaluation semantics, the tolerant presets.xml parser and .vp.json files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from RenderFMLib.errors import TransferFunctionError
from RenderFMLib.presets import get_preset
from RenderFMLib.transfer import TransferFunction
from RenderFMLib.transfer_io import (
    VP_JSON_SCHEMA,
    TransferFunctionWarning,
    format_vtk_points,
    parse_vtk_points,
    preset_from_xml_attributes,
    read_vp_json,
    write_vp_json,
)

torch.set_num_threads(2)


def simple_tf(**kwargs) -> TransferFunction:
    """Opacity 0 below 0 HU rising to 0.8 at 100 HU; colour black -> red at 0 -> white at 200 HU."""
    defaults = dict(opacity_points=[[0.0, 0.0], [100.0, 0.8]],
                    color_points=[[-100.0, 0, 0, 0], [0.0, 1, 0, 0], [200.0, 1, 1, 1]])
    return TransferFunction(**{**defaults, **kwargs})


def assert_same_tf(a: TransferFunction, b: TransferFunction) -> None:
    assert a.name == b.name
    assert np.array_equal(a.opacity_points, b.opacity_points)
    assert np.array_equal(a.color_points, b.color_points)
    if a.gradient_opacity_points is None:
        assert b.gradient_opacity_points is None
    else:
        assert np.array_equal(a.gradient_opacity_points, b.gradient_opacity_points)
    for attr in ("unit_distance", "shade", "ambient", "diffuse", "specular", "specular_power", "extras"):
        assert getattr(a, attr) == getattr(b, attr), attr


# ---- evaluation -------------------------------------------------------------------------------------------
def test_piecewise_linear_with_clamping():
    tf = simple_tf()
    hu = torch.tensor([-5000.0, -100.0, -50.0, 0.0, 25.0, 50.0, 100.0, 150.0, 200.0, 5000.0])
    opacity = tf.opacity(hu)
    np.testing.assert_allclose(opacity.numpy(), [0, 0, 0, 0, 0.2, 0.4, 0.8, 0.8, 0.8, 0.8], atol=1e-7)
    rgb = tf.color(hu)
    assert rgb.shape == (10, 3) and rgb.dtype == torch.float32 and opacity.dtype == torch.float32
    np.testing.assert_allclose(rgb.numpy(), [[0, 0, 0], [0, 0, 0], [0.5, 0, 0], [1, 0, 0], [1, 0.125, 0.125],
                                             [1, 0.25, 0.25], [1, 0.5, 0.5], [1, 0.75, 0.75], [1, 1, 1], [1, 1, 1]],
                               atol=1e-6)


def test_equal_x_gives_a_step():
    tf = get_preset("CT-Cropped-Volume-Bone")  # -451 -> 0, -450 -> 1 (a near step)
    opacity = tf.opacity(torch.tensor([-452.0, -451.0, -450.5, -450.0, 0.0]))
    np.testing.assert_allclose(opacity.numpy(), [0, 0, 0.5, 1, 1], atol=1e-6)
    step = simple_tf(opacity_points=[[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [20.0, 1.0]])
    np.testing.assert_allclose(step.opacity(torch.tensor([9.99, 10.01, 15.0])).numpy(), [0, 1, 1], atol=1e-6)


def test_evaluate_shapes_and_dtype():
    tf = get_preset("CT-Bone")
    hu = torch.linspace(-1000, 2000, 24, dtype=torch.float32).reshape(2, 3, 4)
    rgb, alpha = tf.evaluate(hu, 0.5)
    assert rgb.shape == (2, 3, 4, 3) and alpha.shape == (2, 3, 4)
    assert rgb.dtype == torch.float32 and alpha.dtype == torch.float32
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0


@pytest.mark.parametrize("step, unit", [(1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (0.7, 2.5), (3.0, 0.5)])
def test_opacity_correction(step, unit):
    tf = simple_tf(unit_distance=unit)
    hu = torch.linspace(-50, 150, 41)
    _, alpha = tf.evaluate(hu, step)
    opacity = np.interp(hu.numpy().astype(np.float64), [0.0, 100.0], [0.0, 0.8])
    expected = 1.0 - (1.0 - opacity) ** (step / unit)
    np.testing.assert_allclose(alpha.numpy(), expected, atol=2e-6)
    if step == unit:
        np.testing.assert_allclose(alpha.numpy(), opacity, atol=2e-6)
    # Two half steps absorb exactly as much as one full step.
    _, half = tf.evaluate(hu, step / 2)
    np.testing.assert_allclose((1 - (1 - half) ** 2).numpy(), alpha.numpy(), atol=1e-5)


def test_gradient_opacity_multiplies():
    tf = simple_tf(gradient_opacity_points=[[0.0, 0.0], [50.0, 1.0]])
    hu = torch.tensor([50.0, 100.0, 100.0, 100.0, -10.0])
    grad = torch.tensor([25.0, 0.0, 10.0, 500.0, 40.0])
    _, alpha = tf.evaluate(hu, 2.0, gradient_magnitude=grad)
    opacity = np.array([0.4, 0.8, 0.8, 0.8, 0.0]) * np.array([0.5, 0.0, 0.2, 1.0, 0.8])
    np.testing.assert_allclose(alpha.numpy(), 1 - (1 - opacity) ** 2.0, atol=2e-6)
    assert tf.has_gradient_opacity
    np.testing.assert_allclose(tf.gradient_factor(grad).numpy(), [0.5, 0.0, 0.2, 1.0, 0.8], atol=1e-6)
    # Without gradient opacity (or with the constant one of most presets) the gradient changes nothing.
    plain = get_preset("CT-Bone")
    assert not plain.has_gradient_opacity
    _, a1 = plain.evaluate(hu, 1.0)
    _, a2 = plain.evaluate(hu, 1.0, gradient_magnitude=grad)
    assert torch.equal(a1, a2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluate_on_cuda_matches_cpu():
    tf = get_preset("uCT-Skull")
    hu = torch.linspace(-100, 1100, 1000)
    grad = torch.linspace(0, 300, 1000)
    rgb_cpu, alpha_cpu = tf.evaluate(hu, 0.75, gradient_magnitude=grad)
    rgb_gpu, alpha_gpu = tf.evaluate(hu.cuda(), 0.75, gradient_magnitude=grad.cuda())
    assert rgb_gpu.device.type == "cuda" and rgb_gpu.dtype == torch.float32 and alpha_gpu.dtype == torch.float32
    torch.testing.assert_close(rgb_gpu.cpu(), rgb_cpu, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha_gpu.cpu(), alpha_cpu, atol=1e-6, rtol=1e-5)


def test_transfer_function_rejects_bad_values():
    with pytest.raises(TransferFunctionError, match="scalar opacity points contain NaN"):
        simple_tf(opacity_points=[[0.0, float("nan")], [1.0, 1.0]])
    with pytest.raises(TransferFunctionError, match="unit distance must be > 0"):
        simple_tf(unit_distance=0.0)
    with pytest.raises(TransferFunctionError, match=r"colour points must be an \(N, 4\) table"):
        simple_tf(color_points=[[0.0, 1.0, 1.0]])


# ---- the tolerant presets.xml parser ----------------------------------------------------------------------
def test_parser_reads_well_formed_strings_exactly():
    table = parse_vtk_points("8 -3024 0 -16.4458 0 641.385 0.715686 3071 0.705882", 2)
    assert table.dtype == np.float64
    assert table.tolist() == [[-3024, 0], [-16.4458, 0], [641.385, 0.715686], [3071, 0.705882]]
    text = "16 -3024 1 1 1 -900.0 0.2 1.0 1.0 -500.0 0.3 0.3 1.0 3071 0 0 0 "  # CT-Air, with its trailing space
    assert parse_vtk_points(text, 4)[1].tolist() == [-900.0, 0.2, 1.0, 1.0]
    assert format_vtk_points(parse_vtk_points(text, 4)) == text.replace(".0 ", " ").strip()
    assert parse_vtk_points("", 2).shape == (0, 2)


def test_parser_tolerates_ct_x_ray_like_defects():
    # Like CT-X-ray but with a count that promises more values than there are and a broken number.
    with pytest.warns(TransferFunctionWarning) as record:
        table = parse_vtk_points("10 -3024 0 -200.0 0.0 1500.0 0.05 3071", 2, what="CT-X-ray: scalarOpacity")
    assert table.tolist() == [[-3024, 0], [-200, 0], [1500, 0.05]]
    messages = [str(w.message) for w in record]
    assert "CT-X-ray: scalarOpacity: count 10 but only 7 values; using those" in messages
    assert "CT-X-ray: scalarOpacity: 7 values is not a multiple of 2; dropping the last 1" in messages

    with pytest.warns(TransferFunctionWarning, match="count 4 but 6 values; ignoring the last 2"):
        assert parse_vtk_points("4 0 0 100 1 200 1", 2).tolist() == [[0, 0], [100, 1]]
    with pytest.warns(TransferFunctionWarning, match=r"'-250\.0\.0' is not a well-formed number; read as -250\.0"):
        assert parse_vtk_points("4 -250.0.0 0 1550 1", 2).tolist() == [[-250, 0], [1550, 1]]
    with pytest.warns(TransferFunctionWarning, match=r"point 1 \['abc', '1'\] is not made of finite numbers"):
        assert parse_vtk_points("6 0 0 abc 1 5 1", 2).tolist() == [[0, 0], [5, 1]]
    with pytest.warns(TransferFunctionWarning, match="'-3024' is not a value count"):
        assert parse_vtk_points("-3024 0 3071 1", 2).tolist() == [[-3024, 0], [3071, 1]]
    collected = []
    parse_vtk_points("3 1 2 3", 2, on_warning=collected.append)
    assert collected == ["points: 3 values is not a multiple of 2; dropping the last 1"]


def test_preset_from_attributes_defaults_and_errors():
    collected = []
    tf = preset_from_xml_attributes({"name": "Mine", "scalarOpacity": "4 0 0 100 1",
                                     "colorTransfer": "8 0 0 0 0 100 1 1 1", "ambient": "lots",
                                     "effectiveRange": "0 -1", "scalarOpacityUnitDistance": "2.5"},
                                    on_warning=collected.append)
    assert collected == ["Mine: ambient: 'lots' is not a finite number; using the default 0.1"]
    assert (tf.shade, tf.ambient, tf.diffuse, tf.specular, tf.specular_power) == (False, 0.1, 0.7, 0.2, 10.0)
    assert tf.unit_distance == 2.5 and tf.gradient_opacity_points is None
    assert tf.extras == {"interpolation": "nearest", "effective_range": None}
    with pytest.raises(TransferFunctionError, match="Mine: attribute 'scalarOpacity' is missing or empty"):
        preset_from_xml_attributes({"name": "Mine", "colorTransfer": "4 0 1 1 1"})
    with pytest.raises(TransferFunctionError, match="attribute 'colorTransfer' has no usable point"):
        preset_from_xml_attributes({"name": "Mine", "scalarOpacity": "2 0 1", "colorTransfer": "3 0 1 1"},
                                   on_warning=collected.append)


# ---- .vp.json ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["CT-Bone", "CT-AAA", "CT-Air", "CT-X-ray", "CT-Lung", "MR-T2-Brain",
                                  "DTI-FA-Brain", "US-Fetal", "uCT-Skull"])
def test_vp_json_round_trip_presets(tmp_path, name):
    tf = get_preset(name)
    path = write_vp_json(tf, tmp_path / f"{name}.vp.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = read_vp_json(path)
    assert_same_tf(tf, again)


def test_vp_json_round_trip_custom(tmp_path):
    tf = simple_tf(name="custom", unit_distance=2.5, shade=False, ambient=0.3, diffuse=0.6, specular=0.45,
                   specular_power=33.3, gradient_opacity_points=[[0.0, 0.1], [12.5, 0.9]],
                   extras={"interpolation": "nearest", "effective_range": (-100.0, 200.0)})
    tf.opacity_points[1, 1] = 0.1 + 0.2  # not representable in few digits: checks repr precision
    again = read_vp_json(write_vp_json(tf, tmp_path / "custom.vp.json"))
    assert_same_tf(tf, again)
    plain = simple_tf(name="plain")
    again = read_vp_json(write_vp_json(plain, tmp_path / "plain.vp.json"))
    assert again.gradient_opacity_points is None
    assert again.extras == {"interpolation": "linear", "effective_range": None}


def test_vp_json_uses_slicer_field_names(tmp_path):
    path = write_vp_json(get_preset("uCT-Skull"), tmp_path / "skull.vp.json")
    document = json.loads(path.read_text())
    assert document["@schema"] == VP_JSON_SCHEMA
    vp = document["volumeProperties"][0]
    assert set(vp) == {"effectiveRange", "isoSurfaceValues", "independentComponents", "interpolationType",
                       "useClippedVoxelIntensity", "clippedVoxelIntensity", "scatteringAnisotropy", "components"}
    component = vp["components"][0]
    assert set(component) == {"componentWeight", "shade", "lighting", "disableGradientOpacity",
                              "scalarOpacityUnitDistance", "rgbTransferFunction", "scalarOpacity",
                              "gradientOpacity"}
    assert component["lighting"] == {"diffuse": 0.9, "ambient": 0.1, "specular": 0.2, "specularPower": 10.0}
    assert component["rgbTransferFunction"]["type"] == "colorTransferFunction"
    assert component["scalarOpacity"]["type"] == "piecewiseLinearFunction"
    assert component["gradientOpacity"]["points"][2] == {"x": 46.9644546508789, "y": 0.1, "midpoint": 0.5,
                                                         "sharpness": 0.0}
    assert component["rgbTransferFunction"]["points"][1]["color"] == [0.780392156862745, 0.462745098039216,
                                                                      0.188235294117647]
    assert vp["effectiveRange"] == [0.0, -1.0] and vp["interpolationType"] == "linear"


def slicer_document() -> dict:
    """A .vp.json as Slicer writes it (two points per function, one curved segment)."""
    def pwf(points):
        return {"type": "piecewiseLinearFunction",
                "points": [{"x": x, "y": y, "midpoint": 0.5, "sharpness": 0.0} for x, y in points]}
    return {
        "@schema": VP_JSON_SCHEMA,
        "volumeProperties": [{
            "effectiveRange": [-200.0, 1200.0], "isoSurfaceValues": [0.0], "independentComponents": True,
            "interpolationType": "linear", "useClippedVoxelIntensity": True, "clippedVoxelIntensity": -1e10,
            "scatteringAnisotropy": 0.0,
            "components": [{
                "componentWeight": 1.0, "shade": True,
                "lighting": {"diffuse": 0.9, "ambient": 0.1, "specular": 0.2, "specularPower": 10.0},
                "disableGradientOpacity": False, "scalarOpacityUnitDistance": 0.8,
                "rgbTransferFunction": {"type": "colorTransferFunction", "points": [
                    {"x": -200.0, "color": [0.5, 0.2, 0.1], "midpoint": 0.5, "sharpness": 0.0},
                    {"x": 1200.0, "color": [1.0, 1.0, 0.9], "midpoint": 0.5, "sharpness": 0.0}]},
                "scalarOpacity": pwf([(-200.0, 0.0), (1200.0, 0.7)]),
                "gradientOpacity": pwf([(0.0, 1.0), (255.0, 1.0)]),
            }],
        }],
    }


def test_read_slicer_written_file(tmp_path):
    path = tmp_path / "Bone tweak.vp.json"
    path.write_text(json.dumps(slicer_document(), indent=2))
    tf = read_vp_json(path)
    assert tf.name == "Bone tweak"
    assert tf.opacity_points.tolist() == [[-200.0, 0.0], [1200.0, 0.7]]
    assert tf.color_points[1].tolist() == [1200.0, 1.0, 1.0, 0.9]
    assert tf.unit_distance == 0.8 and tf.shade and tf.extras["effective_range"] == (-200.0, 1200.0)
    document = slicer_document()
    document["volumeProperties"][0]["components"][0]["scalarOpacity"]["points"][0]["midpoint"] = 0.3
    document["volumeProperties"][0]["components"][0]["disableGradientOpacity"] = True
    path.write_text(json.dumps(document))
    with pytest.warns(TransferFunctionWarning, match="1 segment.* with midpoint != 0.5 or sharpness != 0"):
        tf = read_vp_json(path)
    assert tf.gradient_opacity_points is None


def edit(document: dict, change) -> dict:
    change(document)
    return document


@pytest.mark.parametrize("content, message", [
    ('{"@schema": "x", "volumeProperties": [', r"not valid JSON \(Expecting value at line 1 column 39\)"),
    (json.dumps({"@schema": VP_JSON_SCHEMA}), "top level: missing field 'volumeProperties'"),
    (json.dumps({"@schema": VP_JSON_SCHEMA, "volumeProperties": []}), "volumeProperties: the array is empty"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0].pop("components"))),
     r"volumeProperties\[0\]: missing field 'components'"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0]["components"][0].pop("scalarOpacity"))),
     r"volumeProperties\[0\]\.components\[0\]: missing field 'scalarOpacity'"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0]["components"][0]
                     ["rgbTransferFunction"]["points"][1].pop("x"))),
     r"components\[0\]\.rgbTransferFunction\.points\[1\]: missing field 'x'"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0]["components"][0]
                     ["scalarOpacity"]["points"][0].update(y="0.5"))),
     r"scalarOpacity\.points\[0\]\.y: expected a number, got '0\.5'"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0]["components"][0]
                     ["rgbTransferFunction"]["points"][0].update(color=[1, 0]))),
     r"rgbTransferFunction\.points\[0\]\.color: expected three numbers"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0]["components"][0]
                     ["lighting"].update(ambient=float("nan")))),
     "NaN is not allowed in a volume-property file"),
    (json.dumps(edit(slicer_document(), lambda d: d["volumeProperties"][0]["components"][0]
                     ["lighting"].update(ambient=-0.5))),
     "ambient must be a finite number >= 0"),
    ("[1, 2]", "top level: expected a JSON object, got list"),
])
def test_malformed_vp_json_gives_clear_errors(tmp_path, content, message):
    path = tmp_path / "broken.vp.json"
    path.write_text(content)
    with pytest.raises(TransferFunctionError, match=message) as info:
        read_vp_json(path)
    assert str(info.value).startswith(f"{path}: ")


def test_vp_json_missing_file_and_schema_warning(tmp_path):
    with pytest.raises(TransferFunctionError, match="no such volume-property file"):
        read_vp_json(tmp_path / "nope.vp.json")
    document = slicer_document()
    document.pop("@schema")
    path = tmp_path / "noschema.vp.json"
    path.write_text(json.dumps(document))
    with pytest.warns(TransferFunctionWarning, match="@schema: missing or not a volume-property schema"):
        assert read_vp_json(path).name == "noschema"


@pytest.mark.parametrize("name", ["CT-Bone", "CT-Lung", "US-Fetal", "uCT-Skull"])
def test_vp_json_interoperates_with_slicer(tmp_path, name):
    """Slicer's own .vp.json storage node (PyPI slicer-core) reads our files, and we read the files it writes."""
    slicer = pytest.importorskip("slicer")
    tf = get_preset(name)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNode(slicer.vtkMRMLVolumePropertyNode())
    storage = scene.AddNode(slicer.vtkMRMLVolumePropertyJsonStorageNode())
    storage.SetFileName(str(write_vp_json(tf, tmp_path / "ours.vp.json")))
    assert storage.ReadData(node) == 1
    prop = node.GetVolumeProperty()
    assert (bool(prop.GetShade()), prop.GetAmbient(), prop.GetDiffuse(), prop.GetSpecular(),
            prop.GetSpecularPower()) == (tf.shade, tf.ambient, tf.diffuse, tf.specular, tf.specular_power)
    assert prop.GetInterpolationType() == 1 and prop.GetScalarOpacityUnitDistance() == tf.unit_distance
    assert not prop.GetDisableGradientOpacity()
    opacity = prop.GetScalarOpacity()
    nodes = []
    for i in range(opacity.GetSize()):
        values = [0.0] * 4
        opacity.GetNodeValue(i, values)
        nodes.append(values[:2])
    np.testing.assert_array_equal(np.asarray(nodes), tf.opacity_points)

    storage.SetFileName(str(tmp_path / "slicer.vp.json"))
    assert storage.WriteData(node) == 1
    again = read_vp_json(tmp_path / "slicer.vp.json")
    np.testing.assert_array_equal(again.opacity_points, tf.opacity_points)
    np.testing.assert_array_equal(again.color_points, tf.color_points)
    np.testing.assert_allclose(again.gradient_opacity_points, tf.gradient_opacity_points, rtol=2e-6, atol=1e-30)
    assert again.extras == tf.extras and again.shade == tf.shade and again.ambient == tf.ambient
