"""The 31 Slicer volume-rendering presets: values against Slicer's presets.xml, lookup, XML I/O, CLI listing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from RenderFMLib import cli
from RenderFMLib.errors import TransferFunctionError
from RenderFMLib.presets import ct_preset_names, get_preset, preset_modality, preset_names
from RenderFMLib.transfer_io import (
    TransferFunctionWarning,
    read_presets_xml,
    write_presets_xml,
    xml_attributes_from_transfer_function,
)

# Points copied from 3D Slicer's Modules/Loadable/VolumeRendering/Resources/presets.xml (commit 74c1358):
# a few (hu, opacity) and (hu, r, g, b) rows of each preset, its shading as (shade, ambient, diffuse, specular,
# specularPower) and, where it is not the constant "4 0 1 255 1", a gradient-opacity row.
EXPECTED = {
    "CT-AAA": dict(opacity=[(-3024, 0), (166.222, 0.686275), (3071, 0.803922)],
                   color=[(143.556, 0.615686, 0.356863, 0.184314), (3071, 0.827451, 0.658824, 1)],
                   shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-AAA2": dict(opacity=[(145.244, 0.166667), (157.02, 0.5), (1578.73, 0.8125)],
                    color=[(145.244, 0.6, 0.627451, 0.843137), (1578.73, 1, 0.829256, 0.957922)],
                    shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-Bone": dict(opacity=[(-3024, 0), (-16.4458, 0), (641.385, 0.715686), (3071, 0.705882)],
                    color=[(-16.4458, 0.729412, 0.254902, 0.301961), (641.385, 0.905882, 0.815686, 0.552941)],
                    shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-Bones": dict(opacity=[(-1000, 0), (278.93, 0.190476), (952, 0.2)],
                     color=[(-488, 0.3, 1, 0.3), (659.15, 1, 0.912535, 0.0374849)],
                     shading=(True, 0.2, 1, 0, 1), gradient=[(985.12, 1)]),
    "CT-Cardiac": dict(opacity=[(-77.6875, 0), (94.9518, 0.285714), (3071, 0.875)],
                       color=[(260.439, 0.615686, 0, 0)]),
    "CT-Cardiac2": dict(opacity=[(42.8964, 0), (277.642, 0.776786), (1587, 0.754902)],
                        color=[(163.488, 0.917647, 0.639216, 0.0588235)]),
    "CT-Cardiac3": dict(opacity=[(-86.9767, 0), (139.919, 0.589286), (3071, 0.616071)],
                        color=[(-86.9767, 0, 0.25098, 1), (139.919, 1, 0.894893, 0.894893)]),
    "CT-Chest-Contrast-Enhanced": dict(opacity=[(67.0106, 0), (251.105, 0.446429), (439.291, 0.625)],
                                       color=[(439.291, 1, 0.937033, 0.954531)],
                                       shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-Chest-Vessels": dict(opacity=[(-1278.35, 0), (22.8277, 0.428571), (3071, 0.616071)],
                             color=[(22.8277, 0.882353, 0.603922, 0.290196)], shading=(True, 0.2, 1, 0, 1)),
    "CT-Coronary-Arteries": dict(opacity=[(-2048, 0), (159.215, 0.258929), (3661, 1)],
                                 color=[(159.215, 0.159804, 0.159804, 0.159804)], shading=(False, 0.2, 1, 0, 1)),
    "CT-Coronary-Arteries-2": dict(opacity=[(145.016, 0.116071), (217.24, 0.776786), (3661, 0.830357)],
                                   color=[(192.174, 0.909804, 0.454902, 0), (384.347, 0.909804, 0.909804, 1)]),
    "CT-Coronary-Arteries-3": dict(opacity=[(129.982, 0.0982143), (584.878, 0.866071), (3661, 1)],
                                   color=[(255.884, 0.886275, 0.886275, 0.886275)],
                                   shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-Cropped-Volume-Bone": dict(opacity=[(-451, 0), (-450, 1), (1050, 1)],
                                   color=[(-450, 0.0556356, 0.0556356, 0.0556356)], shading=(False, 0.2, 1, 0, 1)),
    "CT-Fat": dict(opacity=[(-100, 0), (-99, 0.15), (-60, 0.15), (-59, 0), (952, 0)],
                   color=[(-65.481, 0.835431, 0.888889, 0.0165387), (2952, 1, 0.300267, 0.299886)],
                   shading=(False, 0.2, 1, 0, 1), gradient=[(0, 1), (988, 1)]),
    "CT-Liver-Vasculature": dict(opacity=[(149.113, 0), (157.884, 0.482143), (1197.95, 0.839286)],
                                 color=[(339.96, 0.695386, 0.59603, 0.36886)]),
    "CT-Lung": dict(opacity=[(-600, 0), (-599, 0.15), (-399, 0), (2952, 0)],
                    color=[(-530, 0.134704, 0.781726, 0.0724558), (-400, 0.888889, 0.254949, 0.0240258)],
                    shading=(True, 0.2, 1, 0, 1), gradient=[(985.12, 1), (988, 1)]),
    "CT-MIP": dict(opacity=[(-637.62, 0), (700, 1), (3071, 1)], color=[(-637.62, 1, 1, 1)],
                   shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-Muscle": dict(opacity=[(-155.407, 0), (217.641, 0.676471), (419.736, 0.833333)],
                      color=[(-155.407, 0.54902, 0.25098, 0.14902)]),
    "CT-Pulmonary-Arteries": dict(opacity=[(-568.625, 0), (-244.813, 0.401786), (3592.73, 0.839286)],
                                  color=[(18.2775, 0.843137, 0.0156863, 0.156863)], shading=(True, 0.2, 1, 0, 1)),
    "CT-Soft-Tissue": dict(opacity=[(-167.01, 0), (-160, 1), (240, 1)],
                           color=[(240, 1, 1, 1), (-160, 0.0556356, 0.0556356, 0.0556356)],
                           shading=(False, 0.2, 1, 0, 1)),
    "CT-Air": dict(opacity=[(-3024, 0.705882), (-900, 0.715686), (-500, 0)],
                   color=[(-900, 0.2, 1, 1), (-500, 0.3, 0.3, 1), (3071, 0, 0, 0)],
                   shading=(True, 0.1, 0.9, 0.2, 10)),
    "CT-X-ray": dict(opacity=[(-200, 0), (1500, 0.05), (3071, 0.05)], color=[(-3024, 1, 1, 1), (3071, 1, 1, 1)],
                     shading=(False, 0.1, 0.9, 0.2, 10)),
    "MR-Angio": dict(opacity=[(151.354, 0), (158.279, 0.4375), (3661, 0.741071)],
                     color=[(158.279, 0.74902, 0.376471, 0)]),
    "MR-Default": dict(opacity=[(20, 0), (40, 0.15), (1024, 0.5)],
                       color=[(40, 0.403922, 0.145098, 0.0784314)], shading=(True, 0.2, 1, 0, 1)),
    "MR-MIP": dict(opacity=[(98.3725, 0), (416.637, 1), (2800, 1)], color=[(0, 1, 1, 1)],
                   shading=(False, 0.2, 1, 0, 1)),
    "MR-T2-Brain": dict(opacity=[(36.05, 0), (218.302, 0.171429), (412.406, 1)],
                        color=[(98.7223, 0.956863, 0.839216, 0.192157), (412.406, 0, 0.592157, 0.807843)],
                        shading=(True, 0.3, 0.6, 0.5, 40), gradient=[(160.25, 1)]),
    "DTI-FA-Brain": dict(opacity=[(0.3501, 0.0158), (0.49379, 0.7619), (0.992, 1)],
                         color=[(0.24974, 0.4941, 1, 0), (0.7492, 0.51764, 0, 1)],
                         shading=(True, 0.3, 0.9, 0.5, 40), gradient=[(0.995, 1)]),
    "US-Fetal": dict(opacity=[(-10, 0), (120, 0.6), (270, 0.8)],
                     color=[(102, 0.882353, 0.603922, 0.290196), (270, 0.694, 0.478, 0.396)],
                     shading=(True, 0.1, 0.9, 0.2, 10), gradient=[(-10, 0), (-1, 1), (90, 1)]),
    "uCT-Bone-8bit": dict(opacity=[(58.5999794006348, 0), (157.723983764648, 1)],
                          color=[(76.7996444702148, 0.913725490196078, 0.164705882352941, 0.113725490196078)],
                          shading=(True, 0.3, 0.6, 0.2, 40), gradient=[(313.599822998047, 1)]),
    "uCT-Bone-16bit": dict(opacity=[(33600, 0), (59866.8515625, 1), (99135, 1)],
                           color=[(45280.02734375, 1, 1, 1)], shading=(True, 0.3, 0.6, 0.2, 40),
                           gradient=[(33600, 1), (99135, 1)]),
    "uCT-Skull": dict(opacity=[(25, 0), (72.3597412109375, 1), (1024, 1)],
                      color=[(43.8543891906738, 0.780392156862745, 0.462745098039216, 0.188235294117647)],
                      shading=(True, 0.1, 0.9, 0.2, 10), gradient=[(46.9644546508789, 0.1), (128.360549926758, 1)]),
}


def assert_rows_present(table: np.ndarray, rows, what: str) -> None:
    for row in rows:
        assert (table == np.asarray(row, dtype=np.float64)).all(axis=1).any(), f"{what}: {row} not in {table}"


def assert_same_tf(a, b) -> None:
    assert a.name == b.name
    assert np.array_equal(a.opacity_points, b.opacity_points)
    assert np.array_equal(a.color_points, b.color_points)
    if a.gradient_opacity_points is None:
        assert b.gradient_opacity_points is None
    else:
        assert np.array_equal(a.gradient_opacity_points, b.gradient_opacity_points)
    for attr in ("unit_distance", "shade", "ambient", "diffuse", "specular", "specular_power", "extras"):
        assert getattr(a, attr) == getattr(b, attr), attr


def test_all_31_presets_with_unique_names():
    names = preset_names()
    assert len(names) == 31
    assert len(set(names)) == 31 and len({n.lower() for n in names}) == 31
    assert set(names) == set(EXPECTED)
    assert names[:3] == ["CT-AAA", "CT-AAA2", "CT-Bone"] and names[-1] == "uCT-Skull"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_values_match_slicer(name):
    tf = get_preset(name)
    expected = EXPECTED[name]
    assert tf.name == name
    assert_rows_present(tf.opacity_points, expected["opacity"], f"{name} opacity")
    assert_rows_present(tf.color_points, expected["color"], f"{name} colour")
    if "shading" in expected:
        assert (tf.shade, tf.ambient, tf.diffuse, tf.specular, tf.specular_power) == expected["shading"]
    if "gradient" in expected:
        assert_rows_present(tf.gradient_opacity_points, expected["gradient"], f"{name} gradient opacity")
    else:
        assert tf.gradient_opacity_points.tolist() == [[0.0, 1.0], [255.0, 1.0]]
        assert not tf.has_gradient_opacity
    assert tf.unit_distance == 1.0 and tf.extras["interpolation"] == "linear"
    assert np.all(np.diff(tf.opacity_points[:, 0]) >= 0)


def test_point_counts_and_special_entries():
    assert len(get_preset("CT-Fat").color_points) == 9
    assert len(get_preset("CT-AAA2").opacity_points) == 8
    # Duplicate x values are kept in file order (a step), as VTK would after nudging them apart.
    assert get_preset("DTI-FA-Brain").opacity_points[-3:].tolist() == [[0.992, 1.0], [0.995, 0.0], [0.995, 0.0]]
    assert get_preset("uCT-Skull").has_gradient_opacity
    # CT-X-ray's effectiveRange is "-250.0.0 1550.0" in Slicer's file: read as the evident intent.
    assert get_preset("CT-X-ray").extras["effective_range"] == (-250.0, 1550.0)
    assert get_preset("CT-AAA").extras["effective_range"] == (143.556, 419.736)
    assert get_preset("uCT-Skull").extras["effective_range"] is None  # "0 -1": not set


def test_visible_ranges():
    assert get_preset("CT-Bone").visible_hu_range == (-16.4458, float("inf"))
    assert get_preset("CT-Lung").visible_hu_range == (-600.0, -399.0)
    assert get_preset("CT-Air").visible_hu_range == (float("-inf"), -500.0)


def test_ct_presets_and_modalities():
    ct = ct_preset_names()
    assert len(ct) == 22 and all(n.startswith("CT-") for n in ct)
    assert {"CT-Air", "CT-X-ray", "CT-Bone"} <= set(ct) and "uCT-Skull" not in ct
    assert preset_modality("ct-bone") == "CT"
    assert preset_modality("MR-T2-Brain") == "MR"
    assert preset_modality("uCT-Skull") == "micro-CT"
    assert preset_modality("US-Fetal") == "US"


def test_lookup_is_case_insensitive_and_returns_copies():
    assert get_preset("ct-bone").name == "CT-Bone"
    assert get_preset("CT_BONE").name == "CT-Bone"
    tf = get_preset("CT-Bone")
    tf.opacity_points[:, 1] = 0.0
    tf.extras["interpolation"] = "nearest"
    fresh = get_preset("CT-Bone")
    assert fresh.opacity_points[2, 1] == 0.715686 and fresh.extras["interpolation"] == "linear"


def test_unknown_preset_lists_close_matches():
    with pytest.raises(TransferFunctionError) as info:
        get_preset("CT-Bonez")
    message = str(info.value)
    assert "unknown preset 'CT-Bonez'" in message
    assert "Did you mean CT-Bone, CT-Bones" in message
    assert "uCT-Skull" in message  # the full list follows
    with pytest.raises(TransferFunctionError, match="Available presets: CT-AAA"):
        get_preset("nothing-like-it")


def test_presets_xml_round_trip(tmp_path):
    originals = [get_preset(name) for name in preset_names()]
    path = write_presets_xml(originals, tmp_path / "presets.xml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = read_presets_xml(path)
    assert len(again) == 31
    for a, b in zip(originals, again, strict=True):
        assert_same_tf(a, b)


def test_read_slicer_presets_xml_with_defects(tmp_path):
    xml = tmp_path / "my_presets.xml"
    xml.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<MRML>\n'
        '  <VolumeProperty name="CT-Bone" gradientOpacity="4 0 1 255 1" specularPower="10" '
        'scalarOpacity="8 -3024 0 -16.4458 0 641.385 0.715686 3071 0.705882" specular="0.2" shade="1" '
        'ambient="0.1" colorTransfer="16 -3024 0 0 0 -16.4458 0.729412 0.254902 0.301961 641.385 0.905882 '
        '0.815686 0.552941 3071 1 1 1" diffuse="0.9" interpolation="1" effectiveRange="-16.4458 641.385"/>\n'
        '  <VolumeProperty name="Broken-X-ray" gradientOpacity="4 0 1 255 1" specularPower="10" '
        'scalarOpacity="10 -3024 0 -200.0 0.0 1500.0 0.05 3071" specular="0.2" shade="0" ambient="0.1" '
        'colorTransfer="8 -3024 1 1 1 3071 1 1 1 " diffuse="0.9" interpolation="1" '
        'effectiveRange="-250.0.0 1550.0"/>\n'
        '  <VolumeProperty name="No-Colour" scalarOpacity="4 0 0 100 1"/>\n'
        '</MRML>\n')
    with pytest.warns(TransferFunctionWarning) as record:
        tfs = read_presets_xml(xml)
    messages = [str(w.message) for w in record]
    assert [tf.name for tf in tfs] == ["CT-Bone", "Broken-X-ray"]
    assert_same_tf(tfs[0], get_preset("CT-Bone"))
    assert tfs[1].opacity_points.tolist() == [[-3024.0, 0.0], [-200.0, 0.0], [1500.0, 0.05]]
    assert tfs[1].extras["effective_range"] == (-250.0, 1550.0)
    assert any("Broken-X-ray: scalarOpacity: count 10 but only 7 values" in m for m in messages)
    assert any("'-250.0.0' is not a well-formed number; read as -250.0" in m for m in messages)
    assert any("entry 2 skipped: No-Colour: attribute 'colorTransfer' is missing" in m for m in messages)
    assert all(m.startswith(str(xml)) for m in messages)


def test_read_presets_xml_errors(tmp_path):
    with pytest.raises(TransferFunctionError, match="no such presets file"):
        read_presets_xml(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<MRML><VolumeProperty name='x'</MRML>")
    with pytest.raises(TransferFunctionError, match=r"bad\.xml: not a valid XML file"):
        read_presets_xml(bad)
    empty = tmp_path / "empty.xml"
    empty.write_text("<MRML></MRML>")
    with pytest.raises(TransferFunctionError, match="no <VolumeProperty> element"):
        read_presets_xml(empty)


def test_xml_attributes_keep_slicer_strings():
    attributes = xml_attributes_from_transfer_function(get_preset("CT-Bone"))
    assert attributes["scalarOpacity"] == "8 -3024 0 -16.4458 0 641.385 0.715686 3071 0.705882"
    assert attributes["colorTransfer"] == ("16 -3024 0 0 0 -16.4458 0.729412 0.254902 0.301961 641.385 0.905882 "
                                           "0.815686 0.552941 3071 1 1 1")
    assert attributes["gradientOpacity"] == "4 0 1 255 1"
    assert (attributes["shade"], attributes["interpolation"]) == ("1", "1")
    assert attributes["effectiveRange"] == "-16.4458 641.385"


def test_cli_presets_json(capsys):
    assert cli.main(["presets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["count"] == 31
    rows = {row["name"]: row for row in listing["presets"]}
    assert list(rows) == preset_names()
    assert rows["CT-Bone"]["modality"] == "CT"
    assert rows["CT-Bone"]["visible_range"] == [-16.4458, None]
    assert rows["CT-Lung"]["visible_range"] == [-600.0, -399.0]
    assert rows["CT-Air"]["visible_range"] == [None, -500.0]
    assert rows["uCT-Skull"]["has_gradient_opacity"] is True

    assert cli.main(["presets", "--json", "--ct"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 22


def test_cli_presets_one(capsys):
    assert cli.main(["presets", "ct-bone", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "CT-Bone" and info["modality"] == "CT"
    assert info["scalar_opacity"][2] == [641.385, 0.715686]
    assert info["color"][1] == [-16.4458, 0.729412, 0.254902, 0.301961]

    assert cli.main(["presets", "CT-Lung"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("CT-Lung  (CT)") and "-600 .. -399" in text and "985.12" in text

    assert cli.main(["presets"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("NAME") and len(table) == 32

    assert cli.main(["presets", "CT-Bonez"]) == 1
    assert "Did you mean CT-Bone" in capsys.readouterr().err


def slicer_table(function, values_per_node: int, keep: int) -> np.ndarray:
    rows = []
    for i in range(function.GetSize()):
        node = [0.0] * values_per_node
        function.GetNodeValue(i, node)
        rows.append(node[:keep])
    return np.asarray(rows)


def test_parser_agrees_with_slicers_own_parser():
    """Slicer (PyPI slicer-core) parses each preset string the same way; it only nudges duplicate x apart."""
    slicer = pytest.importorskip("slicer")
    vtk = pytest.importorskip("vtk")
    document = json.loads((Path(__file__).parents[2] / "Resources" / "presets" / "presets.json").read_text())
    for entry in document["presets"]:
        tf = get_preset(entry["name"])
        for key, ours, make, values_per_node, keep in (
                ("scalarOpacity", tf.opacity_points, vtk.vtkPiecewiseFunction, 4, 2),
                ("gradientOpacity", tf.gradient_opacity_points, vtk.vtkPiecewiseFunction, 4, 2),
                ("colorTransfer", tf.color_points, vtk.vtkColorTransferFunction, 6, 4)):
            function = make()
            if make is vtk.vtkPiecewiseFunction:
                slicer.vtkMRMLVolumePropertyNode.GetPiecewiseFunctionFromString(entry[key], function)
            else:
                slicer.vtkMRMLVolumePropertyNode.GetColorTransferFunctionFromString(entry[key], function)
            theirs = slicer_table(function, values_per_node, keep)
            assert theirs.shape == ours.shape, (entry["name"], key)
            np.testing.assert_allclose(theirs[:, 0], ours[:, 0], rtol=2e-6, atol=1e-6,
                                       err_msg=f"{entry['name']} {key}")
            np.testing.assert_array_equal(theirs[:, 1:], ours[:, 1:], err_msg=f"{entry['name']} {key}")
