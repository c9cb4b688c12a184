"""Transfer-function file formats of 3D Slicer: ``presets.xml`` entries and ``.vp.json`` volume-property files.

* ``presets.xml`` (Slicer's volume-rendering presets, MRML XML): each ``<VolumeProperty>`` element stores its
  functions as strings ``"COUNT v1 v2 ..."`` — ``scalarOpacity`` and ``gradientOpacity`` as ``(x, y)`` pairs,
  ``colorTransfer`` as ``(x, r, g, b)`` quadruples — plus ``shade``, ``ambient``, ``diffuse``, ``specular``,
  ``specularPower``, ``interpolation`` (VTK code: 0 nearest, 1 linear, 2 cubic) and ``effectiveRange``.
  Real files contain small defects (a count that does not match the values, ``"-250.0.0"`` as a number): the
  parser here reads what is there, reports each defect through ``on_warning`` and never crashes on them.
* ``.vp.json`` (Slicer >= 5.9, schema ``volume-property-schema-v1.0.0.json``): field names as written by
  Slicer's ``vtkMRMLVolumePropertyJsonStorageNode``. Round trips through :func:`write_vp_json` and
  :func:`read_vp_json` are exact (floats are written with ``repr`` precision).

Units: x of scalar opacity / colour is the voxel value (HU for CT); x of gradient opacity is the gradient
magnitude (HU/mm). Colours are linear RGB in [0, 1]; opacities are per ``unit_distance`` mm.

Both readers fill ``TransferFunction.extras`` with ``"interpolation"`` (``"nearest"|"linear"|"cubic"``) and
``"effective_range"`` (``(min, max)`` or ``None`` when unset).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .errors import TransferFunctionError
from .transfer import TransferFunction

#: ``@schema`` written into ``.vp.json`` files (the string Slicer writes).
VP_JSON_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/VolumeRendering/"
                  "Resources/Schema/volume-property-schema-v1.0.0.json#")
_SCHEMA_PATTERN = re.compile(r".*volume-property-schema-v[0-9]+\.[0-9]+\.[0-9]+\.json#*$", re.IGNORECASE)

#: VTK interpolation codes (``vtkVolumeProperty::InterpolationType``) and their ``.vp.json`` names.
INTERPOLATION_NAMES = {0: "nearest", 1: "linear", 2: "cubic"}

#: Defaults of a new ``vtkVolumeProperty`` (what Slicer uses for an attribute a file leaves out).
VTK_DEFAULTS = {"shade": False, "ambient": 0.1, "diffuse": 0.7, "specular": 0.2, "specular_power": 10.0,
                "interpolation": "nearest"}

#: Gradient opacity Slicer stores when gradient opacity is off (constant 1).
_CONSTANT_GRADIENT = ((0.0, 1.0), (255.0, 1.0))

#: A number at the start of a token, as C's ``atof`` reads it.
_NUMBER_PREFIX = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

WarningHandler = Callable[[str], None]


class TransferFunctionWarning(UserWarning):
    """A transfer-function file had a defect that was worked around (the message says what and how)."""


def _emit(on_warning: WarningHandler | None, message: str) -> None:
    if on_warning is None:
        warnings.warn(message, TransferFunctionWarning, stacklevel=3)
    else:
        on_warning(message)


# ---- presets.xml strings -----------------------------------------------------------------------------------
def parse_number(token: str, what: str = "value", on_warning: WarningHandler | None = None) -> float:
    """Read one number like C's ``atof``: ``"-250.0.0"`` gives -250.0 with a warning.

    A token with no leading number gives NaN silently: the caller decides what to do and says so.
    """
    try:
        return float(token)
    except ValueError:
        pass
    match = _NUMBER_PREFIX.match(token.strip())
    if match is None:
        return math.nan
    value = float(match.group(0))
    _emit(on_warning, f"{what}: {token!r} is not a well-formed number; read as {value!r}")
    return value


def parse_vtk_points(text: str, components: int, what: str = "points",
                     on_warning: WarningHandler | None = None) -> np.ndarray:
    """Parse a Slicer/VTK point string ``"COUNT v1 v2 ..."`` into a float64 ``(N, components)`` table.

    COUNT is the number of values (not points). Tolerant: when COUNT is smaller than the number of values the
    extra values are ignored (as Slicer does); when it is larger, or missing, the values present are used; a
    trailing incomplete point is dropped; a point with a value that is not a finite number is dropped. Each
    such defect is reported through ``on_warning`` (default: :class:`TransferFunctionWarning`). An empty
    string gives a ``(0, components)`` table. Points keep their order (no sorting).
    """
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    tokens = str(text).split()
    if not tokens:
        return np.zeros((0, components))
    count = _parse_count(tokens[0])
    if count is None:
        _emit(on_warning, f"{what}: {tokens[0]!r} is not a value count; reading all {len(tokens)} tokens as values")
        values = tokens
    else:
        values = tokens[1:]
        if count < len(values):
            _emit(on_warning, f"{what}: count {count} but {len(values)} values; ignoring the last "
                              f"{len(values) - count}")
            values = values[:count]
        elif count > len(values):
            _emit(on_warning, f"{what}: count {count} but only {len(values)} values; using those")
    usable = len(values) - len(values) % components
    if usable != len(values):
        _emit(on_warning, f"{what}: {len(values)} values is not a multiple of {components}; dropping the last "
                          f"{len(values) - usable}")
    numbers = [parse_number(token, what, on_warning) for token in values[:usable]]
    table = np.asarray(numbers, dtype=np.float64).reshape(-1, components)
    finite = np.isfinite(table).all(axis=1)
    for index in np.nonzero(~finite)[0]:
        _emit(on_warning, f"{what}: point {index} {values[index * components:(index + 1) * components]} "
                          "is not made of finite numbers; dropped")
    return table[finite]


def _parse_count(token: str) -> int | None:
    try:
        value = float(token)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    return int(value)


def format_vtk_points(points: np.ndarray) -> str:
    """The inverse of :func:`parse_vtk_points`: ``(N, C)`` table -> ``"COUNT v1 v2 ..."`` (exact floats)."""
    flat = np.asarray(points, dtype=np.float64).reshape(-1)
    return " ".join([str(flat.size)] + [_format_number(v) for v in flat])


def _format_number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def preset_from_xml_attributes(attributes: Mapping[str, str], on_warning: WarningHandler | None = None
                               ) -> TransferFunction:
    """A :class:`TransferFunction` from the attributes of a ``presets.xml`` ``<VolumeProperty>`` element.

    ``attributes`` maps attribute names to their strings (``name``, ``scalarOpacity``, ``colorTransfer``,
    ``gradientOpacity``, ``shade``, ``ambient``, ``diffuse``, ``specular``, ``specularPower``,
    ``interpolation``, ``effectiveRange``; optionally ``scalarOpacityUnitDistance`` in mm, default 1).
    Missing shading attributes take VTK's defaults. Raises :class:`TransferFunctionError` when the scalar
    opacity or colour function is missing or has no usable point; other defects are warnings.
    """
    name = str(attributes.get("name") or "unnamed")

    def points(key: str, components: int, required: bool) -> np.ndarray | None:
        text = attributes.get(key)
        if text is None or not str(text).split():
            if required:
                raise TransferFunctionError(f"{name}: attribute {key!r} is missing or empty")
            return None
        table = parse_vtk_points(text, components, f"{name}: {key}", on_warning)
        if len(table) == 0:
            if required:
                raise TransferFunctionError(f"{name}: attribute {key!r} has no usable point: {text!r}")
            _emit(on_warning, f"{name}: {key}: no usable point; ignored")
            return None
        return table

    def number(key: str, default: float) -> float:
        text = attributes.get(key)
        if text is None:
            return default
        value = parse_number(str(text), f"{name}: {key}", on_warning)
        if not math.isfinite(value):
            _emit(on_warning, f"{name}: {key}: {text!r} is not a finite number; using the default {default}")
            return default
        return value

    opacity = points("scalarOpacity", 2, required=True)
    color = points("colorTransfer", 4, required=True)
    gradient = points("gradientOpacity", 2, required=False)
    interpolation_code = int(number("interpolation", 0.0))
    interpolation = INTERPOLATION_NAMES.get(interpolation_code)
    if interpolation is None:
        _emit(on_warning, f"{name}: interpolation: unknown code {interpolation_code}; using linear")
        interpolation = "linear"
    return TransferFunction(
        color_points=color, opacity_points=opacity, gradient_opacity_points=gradient,
        unit_distance=number("scalarOpacityUnitDistance", 1.0),
        shade=bool(number("shade", float(VTK_DEFAULTS["shade"]))),
        ambient=number("ambient", VTK_DEFAULTS["ambient"]), diffuse=number("diffuse", VTK_DEFAULTS["diffuse"]),
        specular=number("specular", VTK_DEFAULTS["specular"]),
        specular_power=number("specularPower", VTK_DEFAULTS["specular_power"]),
        name=name,
        extras={"interpolation": interpolation,
                "effective_range": _parse_effective_range(attributes.get("effectiveRange"), name, on_warning)})


def _parse_effective_range(text, name: str, on_warning: WarningHandler | None) -> tuple[float, float] | None:
    """``"min max"`` -> ``(min, max)``; ``None`` when absent or unset (Slicer marks unset with min > max)."""
    if text is None or not str(text).split():
        return None
    tokens = str(text).split()
    values = [parse_number(token, f"{name}: effectiveRange", on_warning) for token in tokens[:2]]
    if len(tokens) != 2 or not all(math.isfinite(v) for v in values):
        _emit(on_warning, f"{name}: effectiveRange {text!r} is not two numbers; ignored")
        return None
    return _checked_range(values, name, on_warning)


def _checked_range(values, name: str, on_warning: WarningHandler | None) -> tuple[float, float] | None:
    low, high = float(values[0]), float(values[1])
    if low > high:
        if (low, high) != (0.0, -1.0):  # (0, -1) is how Slicer writes "not set"
            _emit(on_warning, f"{name}: effectiveRange [{low}, {high}] is empty (min > max); ignored")
        return None
    return low, high


def xml_attributes_from_transfer_function(tf: TransferFunction) -> dict[str, str]:
    """The ``presets.xml`` attribute strings for ``tf`` (inverse of :func:`preset_from_xml_attributes`)."""
    codes = {v: k for k, v in INTERPOLATION_NAMES.items()}
    effective_range = tf.extras.get("effective_range")
    gradient = tf.gradient_opacity_points if tf.gradient_opacity_points is not None else _CONSTANT_GRADIENT
    attributes = {
        "name": tf.name,
        "scalarOpacity": format_vtk_points(tf.opacity_points),
        "colorTransfer": format_vtk_points(tf.color_points),
        "gradientOpacity": format_vtk_points(np.asarray(gradient)),
        "shade": "1" if tf.shade else "0",
        "ambient": _format_number(tf.ambient), "diffuse": _format_number(tf.diffuse),
        "specular": _format_number(tf.specular), "specularPower": _format_number(tf.specular_power),
        "interpolation": str(codes.get(tf.extras.get("interpolation", "linear"), 1)),
        "effectiveRange": " ".join(_format_number(v) for v in (effective_range or (0.0, -1.0))),
    }
    if tf.unit_distance != 1.0:
        attributes["scalarOpacityUnitDistance"] = _format_number(tf.unit_distance)
    return attributes


def read_presets_xml(path: str | os.PathLike, on_warning: WarningHandler | None = None) -> list[TransferFunction]:
    """All presets of a Slicer ``presets.xml`` (or any MRML file with ``<VolumeProperty>`` elements).

    Entries that cannot form a transfer function are skipped with a warning naming the file and entry; raises
    :class:`TransferFunctionError` when the file is missing, is not XML, or holds no usable entry.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise TransferFunctionError(f"{path}: no such presets file") from None
    except ET.ParseError as exc:
        raise TransferFunctionError(f"{path}: not a valid XML file ({exc})") from None
    except OSError as exc:
        raise TransferFunctionError(f"{path}: cannot read ({exc.strerror or exc})") from None
    elements = [e for e in root.iter() if e.tag == "VolumeProperty"]
    if not elements:
        raise TransferFunctionError(f"{path}: no <VolumeProperty> element found")

    def file_warning(message: str) -> None:
        _emit(on_warning, f"{path}: {message}")

    presets = []
    for index, element in enumerate(elements):
        try:
            presets.append(preset_from_xml_attributes(element.attrib, file_warning))
        except TransferFunctionError as exc:
            file_warning(f"entry {index} skipped: {exc}")
    if not presets:
        raise TransferFunctionError(f"{path}: none of the {len(elements)} <VolumeProperty> entries is usable")
    return presets


def write_presets_xml(tfs: list[TransferFunction], path: str | os.PathLike) -> Path:
    """Write transfer functions as a Slicer ``presets.xml`` (one ``<VolumeProperty>`` each); returns the path."""
    root = ET.Element("MRML")
    for index, tf in enumerate(tfs, start=1):
        attributes = {"id": f"vtkMRMLVolumePropertyNode{index}", **xml_attributes_from_transfer_function(tf)}
        ET.SubElement(root, "VolumeProperty", attributes)
    ET.indent(root, space="  ")
    path = Path(path)
    try:
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise TransferFunctionError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


# ---- .vp.json ----------------------------------------------------------------------------------------------
def write_vp_json(tf: TransferFunction, path: str | os.PathLike) -> Path:
    """Write ``tf`` as a Slicer ``.vp.json`` volume-property file (one volume property, one component).

    Fields Slicer writes but a :class:`TransferFunction` does not model get the values of a new Slicer
    volume-property node. Without gradient opacity, ``disableGradientOpacity`` is true. Returns the path.
    """
    gradient = tf.gradient_opacity_points
    effective_range = tf.extras.get("effective_range") or (0.0, -1.0)
    component = {
        "componentWeight": 1.0,
        "shade": bool(tf.shade),
        "lighting": {"diffuse": tf.diffuse, "ambient": tf.ambient, "specular": tf.specular,
                     "specularPower": tf.specular_power},
        "disableGradientOpacity": gradient is None,
        "scalarOpacityUnitDistance": tf.unit_distance,
        "rgbTransferFunction": {"type": "colorTransferFunction",
                                "points": [{"x": float(p[0]), "color": [float(c) for c in p[1:4]],
                                            "midpoint": 0.5, "sharpness": 0.0} for p in tf.color_points]},
        "scalarOpacity": _piecewise_json(tf.opacity_points),
        "gradientOpacity": _piecewise_json(gradient if gradient is not None else np.asarray(_CONSTANT_GRADIENT)),
    }
    document = {
        "@schema": VP_JSON_SCHEMA,
        "volumeProperties": [{
            "effectiveRange": [float(v) for v in effective_range],
            "isoSurfaceValues": [0.0],
            "independentComponents": True,
            "interpolationType": tf.extras.get("interpolation", "linear"),
            "useClippedVoxelIntensity": True,
            "clippedVoxelIntensity": -1e10,
            "scatteringAnisotropy": 0.0,
            "components": [component],
        }],
    }
    path = Path(path)
    try:
        path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise TransferFunctionError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def _piecewise_json(points: np.ndarray) -> dict:
    return {"type": "piecewiseLinearFunction",
            "points": [{"x": float(x), "y": float(y), "midpoint": 0.5, "sharpness": 0.0} for x, y in points]}


def read_vp_json(path: str | os.PathLike, index: int = 0, on_warning: WarningHandler | None = None
                 ) -> TransferFunction:
    """Read volume property ``index`` of a Slicer ``.vp.json`` file as a :class:`TransferFunction`.

    The name is the file name without ``.vp.json``. Only the first component is used (a warning if there are
    more). Midpoint/sharpness other than 0.5/0 (non-linear segments) are read as linear, with a warning.
    Raises :class:`TransferFunctionError` naming the file and the JSON path of the problem for invalid JSON,
    NaN/Infinity, missing required fields or values of the wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TransferFunctionError(f"{path}: no such volume-property file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TransferFunctionError(f"{path}: cannot read ({exc})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise TransferFunctionError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                                    ) from None
    except ValueError as exc:
        raise TransferFunctionError(f"{path}: {exc}") from None
    reader = _JsonReader(path, on_warning)
    return reader.volume_property(document, index)


def _reject_constant(constant: str):
    raise ValueError(f"{constant} is not allowed in a volume-property file (numbers must be finite)")


class _JsonReader:
    """Checks a parsed ``.vp.json`` document; every error names the file and the JSON path."""

    def __init__(self, path: Path, on_warning: WarningHandler | None):
        self.path = path
        self.on_warning = on_warning

    def fail(self, where: str, problem: str):
        raise TransferFunctionError(f"{self.path}: {where}: {problem}")

    def warn(self, where: str, problem: str) -> None:
        _emit(self.on_warning, f"{self.path}: {where}: {problem}")

    def get(self, obj: dict, key: str, where: str, kind, required: bool = True, default=None):
        if key not in obj:
            if required:
                self.fail(where, f"missing field {key!r}")
            return default
        value = obj[key]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self.fail(f"{where}.{key}", f"expected a number, got {value!r}")
            return float(value)
        if not isinstance(value, kind):
            self.fail(f"{where}.{key}", f"expected {_kind_name(kind)}, got {type(value).__name__} {value!r}")
        return value

    def volume_property(self, document, index: int) -> TransferFunction:
        if not isinstance(document, dict):
            self.fail("top level", f"expected a JSON object, got {type(document).__name__}")
        schema = document.get("@schema")
        if not isinstance(schema, str) or not _SCHEMA_PATTERN.match(schema):
            self.warn("@schema", f"missing or not a volume-property schema ({schema!r}); reading anyway")
        properties = self.get(document, "volumeProperties", "top level", list)
        if not properties:
            self.fail("volumeProperties", "the array is empty")
        if not 0 <= index < len(properties):
            self.fail("volumeProperties", f"index {index} out of range (the file has {len(properties)})")
        where = f"volumeProperties[{index}]"
        vp = properties[index]
        if not isinstance(vp, dict):
            self.fail(where, f"expected an object, got {type(vp).__name__}")
        components = self.get(vp, "components", where, list)
        if not components:
            self.fail(f"{where}.components", "the array is empty")
        if len(components) > 1:
            self.warn(f"{where}.components", f"{len(components)} components; only the first is used")
        where_c = f"{where}.components[0]"
        component = components[0]
        if not isinstance(component, dict):
            self.fail(where_c, f"expected an object, got {type(component).__name__}")

        interpolation = self.get(vp, "interpolationType", where, str, required=False, default="linear")
        if interpolation not in INTERPOLATION_NAMES.values():
            self.warn(f"{where}.interpolationType", f"unknown value {interpolation!r}; using 'nearest' as Slicer does")
            interpolation = "nearest"
        effective_range = None
        if "effectiveRange" in vp:
            values = self.get(vp, "effectiveRange", where, list)
            if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                self.fail(f"{where}.effectiveRange", f"expected two numbers, got {values!r}")
            effective_range = _checked_range(values, f"{self.path}: {where}", self.on_warning)

        lighting = self.get(component, "lighting", where_c, dict, required=False, default={})
        where_l = f"{where_c}.lighting"
        gradient = None
        if not self.get(component, "disableGradientOpacity", where_c, bool, required=False, default=False):
            if "gradientOpacity" in component:
                gradient = self.function(component, "gradientOpacity", where_c, color=False)
        fields = dict(
            color_points=self.function(component, "rgbTransferFunction", where_c, color=True),
            opacity_points=self.function(component, "scalarOpacity", where_c, color=False),
            gradient_opacity_points=gradient,
            unit_distance=self.get(component, "scalarOpacityUnitDistance", where_c, float, required=False,
                                   default=1.0),
            shade=self.get(component, "shade", where_c, bool, required=False, default=VTK_DEFAULTS["shade"]),
            ambient=self.get(lighting, "ambient", where_l, float, required=False, default=VTK_DEFAULTS["ambient"]),
            diffuse=self.get(lighting, "diffuse", where_l, float, required=False, default=VTK_DEFAULTS["diffuse"]),
            specular=self.get(lighting, "specular", where_l, float, required=False,
                              default=VTK_DEFAULTS["specular"]),
            specular_power=self.get(lighting, "specularPower", where_l, float, required=False,
                                    default=VTK_DEFAULTS["specular_power"]),
            name=_vp_json_stem(self.path),
            extras={"interpolation": interpolation, "effective_range": effective_range})
        try:
            return TransferFunction(**fields)
        except TransferFunctionError as exc:  # values out of range: name the file
            raise TransferFunctionError(f"{self.path}: {where}: {exc}") from None

    def function(self, component: dict, key: str, where: str, color: bool) -> np.ndarray:
        where_f = f"{where}.{key}"
        function = self.get(component, key, where, dict)
        points = self.get(function, "points", where_f, list)
        if not points:
            self.fail(f"{where_f}.points", "the array is empty")
        rows = []
        nonlinear = 0
        for i, point in enumerate(points):
            where_p = f"{where_f}.points[{i}]"
            if not isinstance(point, dict):
                self.fail(where_p, f"expected an object, got {type(point).__name__}")
            x = self.get(point, "x", where_p, float)
            if color:
                rgb = self.get(point, "color", where_p, list)
                if len(rgb) != 3 or any(isinstance(c, bool) or not isinstance(c, (int, float)) for c in rgb):
                    self.fail(f"{where_p}.color", f"expected three numbers, got {rgb!r}")
                rows.append([x, *map(float, rgb)])
            else:
                rows.append([x, self.get(point, "y", where_p, float)])
            midpoint = self.get(point, "midpoint", where_p, float, required=False, default=0.5)
            sharpness = self.get(point, "sharpness", where_p, float, required=False, default=0.0)
            if (midpoint != 0.5 or sharpness != 0.0) and i < len(points) - 1:  # the last point has no segment
                nonlinear += 1
        if nonlinear:
            self.warn(where_f, f"{nonlinear} segment(s) with midpoint != 0.5 or sharpness != 0 read as linear")
        return np.asarray(rows, dtype=np.float64)


def _kind_name(kind) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true or false"}.get(kind, kind.__name__)


def _vp_json_stem(path: Path) -> str:
    name = path.name
    for suffix in (".vp.json", ".json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def transfer_function_to_dict(tf: TransferFunction) -> dict:
    """A JSON-ready summary of ``tf``: points as lists, shading, extras; infinite bounds become ``None``."""
    low, high = tf.visible_hu_range
    visible = None if low > high else [None if math.isinf(low) else low, None if math.isinf(high) else high]
    gradient = tf.gradient_opacity_points
    return {
        "name": tf.name,
        "scalar_opacity": tf.opacity_points.tolist(),
        "color": tf.color_points.tolist(),
        "gradient_opacity": None if gradient is None else gradient.tolist(),
        "unit_distance": tf.unit_distance,
        "shade": tf.shade, "ambient": tf.ambient, "diffuse": tf.diffuse, "specular": tf.specular,
        "specular_power": tf.specular_power,
        "interpolation": tf.extras.get("interpolation"),
        "effective_range": None if tf.extras.get("effective_range") is None else list(tf.extras["effective_range"]),
        "visible_range": visible,
    }
