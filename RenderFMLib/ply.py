"""PLY files: the 6DGS layout (read/write) and a standard 3DGS export for common Gaussian-splat viewers.

6DGS layout (binary little-endian, one ``vertex`` element, property names of the 6DGS authors' code):
``x y z`` spatial mean (RAS mm); ``nx ny nz`` direction mean; ``f_dc_0..2`` and ``f_rest_*`` SH coefficients
(3DGS order: ``f_rest`` runs over coefficients 1..K-1 of red, then green, then blue); ``opacity`` (logit);
``diags_0..5`` log-diagonal and ``l_triangs_0..14`` off-diagonal Cholesky parameters (see
:mod:`RenderFMLib.gaussians`); optional ``label`` (int16). Comments record ``renderfm 6dgs``, the SH degree and
the conditioning ``lambda``.

3DGS export: the Gaussians conditioned for one view (camera centre or a single direction), written as ``x y z
nx ny nz f_dc_0..2 f_rest_0..44 opacity scale_0..2 rot_0..3``: log standard deviations and a unit quaternion
``(w, x, y, z)`` from the eigen-decomposition of the conditioned covariance, opacity logit, and the colour seen
from that view converted to sRGB (3DGS viewers blend display values) as the SH DC term.

Reading uses a small parser of our own rather than the ``plyfile`` package: the layout is a single element of
scalar properties (one ``numpy.frombuffer``), and malformed input must never allocate from header counts or
fail with anything but :class:`PlyError` — guarantees plyfile does not give (it sizes arrays from the header),
so it would need the same header checks in front of it. Nothing is evaluated: no pickle, no ``eval``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .conditioning import DEFAULT_LAMBDA, condition, condition_on_directions
from .errors import GaussianError, PlyError
from .gaussians import Gaussians6D
from .image import linear_to_srgb
from .sh import C0, degree_from_coefficients

#: PLY scalar type names -> numpy type codes (without byte order).
PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
#: Largest header accepted (bytes).
MAX_HEADER_BYTES = 1 << 16
#: Largest number of properties per element accepted.
MAX_PROPERTIES = 4096

POSITION = ("x", "y", "z")
DIRECTION = ("nx", "ny", "nz")
DC = ("f_dc_0", "f_dc_1", "f_dc_2")
DIAGONAL = tuple(f"diags_{i}" for i in range(6))
OFFDIAGONAL = tuple(f"l_triangs_{i}" for i in range(15))


@dataclass
class PlyElement:
    """One element of a PLY header: name, count and scalar properties ``[(name, numpy type code)]``; ``lists``
    names its list properties (only allowed in elements that are skipped)."""

    name: str
    count: int
    properties: list
    lists: list


@dataclass
class PlyHeader:
    """A parsed PLY header: ``format`` (ascii / binary_...), ``elements``, ``comments``, and ``size`` in bytes."""

    format: str
    elements: list
    comments: list
    size: int


# ---- reading --------------------------------------------------------------------------------------------------
def _parse_header(data: bytes, name: str) -> PlyHeader:
    if not data.startswith(b"ply\n") and not data.startswith(b"ply\r\n"):
        raise PlyError(f"{name}: not a PLY file (missing 'ply' magic line)")
    match = re.search(rb"end_header\r?\n", data[:MAX_HEADER_BYTES])
    if match is None:
        raise PlyError(f"{name}: PLY header has no 'end_header' line within {MAX_HEADER_BYTES} bytes")
    try:
        text = data[:match.start()].decode("ascii")
    except UnicodeDecodeError:
        raise PlyError(f"{name}: PLY header contains non-ASCII bytes") from None
    fmt, elements, comments = None, [], []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        words = line.split()
        if not words or words[0] in ("obj_info",):
            continue
        where = f"{name}: PLY header line {number} ({line.strip()[:60]!r})"
        if words[0] == "comment":
            comments.append(line.strip()[len("comment"):].strip())
        elif words[0] == "format":
            if len(words) != 3 or words[1] not in FORMATS or words[2] != "1.0" or fmt is not None:
                raise PlyError(f"{where}: expected one 'format ascii|binary_little_endian|binary_big_endian 1.0'")
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyError(f"{where}: expected 'element NAME COUNT'")
            elements.append(PlyElement(words[1], int(words[2]), [], []))
        elif words[0] == "property":
            if not elements:
                raise PlyError(f"{where}: property before any element")
            element = elements[-1]
            if len(words) == 5 and words[1] == "list":
                if words[2] not in PLY_TYPES or words[3] not in PLY_TYPES:
                    raise PlyError(f"{where}: unknown list property type")
                element.lists.append(words[4])
            elif len(words) == 3 and words[1] in PLY_TYPES:
                if any(words[2] == p[0] for p in element.properties):
                    raise PlyError(f"{where}: duplicate property {words[2]!r}")
                element.properties.append((words[2], PLY_TYPES[words[1]]))
            else:
                raise PlyError(f"{where}: expected 'property TYPE NAME' with a PLY scalar type")
            if len(element.properties) + len(element.lists) > MAX_PROPERTIES:
                raise PlyError(f"{where}: more than {MAX_PROPERTIES} properties")
        else:
            raise PlyError(f"{where}: unknown header keyword {words[0]!r}")
    if fmt is None:
        raise PlyError(f"{name}: PLY header has no 'format' line")
    return PlyHeader(fmt, elements, comments, match.end())


def _read_vertices(path: Path) -> tuple[dict, PlyHeader]:
    """The ``vertex`` element of a PLY file as ``{property: float64 or int array}`` plus its header."""
    name = str(path)
    try:
        with open(path, "rb") as stream:
            head = stream.read(MAX_HEADER_BYTES)
            header = _parse_header(head, name)
            stream.seek(0, os.SEEK_END)
            file_size = stream.tell()
            vertex_index = next((i for i, e in enumerate(header.elements) if e.name == "vertex"), None)
            if vertex_index is None:
                raise PlyError(f"{name}: PLY file has no 'vertex' element")
            vertex = header.elements[vertex_index]
            if vertex.lists:
                raise PlyError(f"{name}: the vertex element has list properties ({', '.join(vertex.lists)})")
            if not vertex.properties:
                raise PlyError(f"{name}: the vertex element has no properties")
            order = FORMATS[header.format]
            offset = header.size
            if order is None:
                return _read_ascii(stream, header, vertex_index, file_size, name), header
            for element in header.elements[:vertex_index]:
                if element.lists:
                    raise PlyError(f"{name}: element {element.name!r} before 'vertex' has list properties")
                offset += element.count * np.dtype([(p, order + t) for p, t in element.properties]).itemsize
            dtype = np.dtype([(p, order + t) for p, t in vertex.properties])
            needed = vertex.count * dtype.itemsize
            if offset + needed > file_size:
                raise PlyError(f"{name}: truncated PLY: the header declares {vertex.count} vertices "
                               f"({needed} bytes from byte {offset}) but the file has {file_size} bytes")
            stream.seek(offset)
            buffer = stream.read(needed)
    except OSError as exc:
        raise PlyError(f"{name}: cannot read PLY file: {exc.strerror or exc}") from None
    if len(buffer) != needed:
        raise PlyError(f"{name}: truncated PLY data")
    records = np.frombuffer(buffer, dtype=dtype, count=vertex.count)
    return {p: records[p] for p, _ in vertex.properties}, header


def _read_ascii(stream, header: PlyHeader, vertex_index: int, file_size: int, name: str) -> dict:
    skip = sum(e.count for e in header.elements[:vertex_index])
    vertex = header.elements[vertex_index]
    width = len(vertex.properties)
    # every value takes at least two bytes (a digit and a separator): reject impossible counts before reading
    if (skip + vertex.count) * 2 > file_size - header.size or vertex.count * width * 2 > file_size - header.size:
        raise PlyError(f"{name}: truncated PLY: the header declares more values than the file can hold")
    stream.seek(header.size)
    try:
        lines = stream.read().decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise PlyError(f"{name}: ASCII PLY data contains non-ASCII bytes") from None
    rows = lines[skip:skip + vertex.count]
    if len(rows) != vertex.count:
        raise PlyError(f"{name}: truncated PLY: {vertex.count} vertex lines declared, {len(rows)} found")
    tokens = [row.split() for row in rows]
    if any(len(t) != width for t in tokens):
        raise PlyError(f"{name}: ASCII PLY vertex lines must have {width} values each")
    try:
        table = np.array(tokens, dtype=np.float64).reshape(vertex.count, width)
    except ValueError:
        raise PlyError(f"{name}: ASCII PLY vertex data has values that are not numbers") from None
    columns = {}
    for i, (key, code) in enumerate(vertex.properties):
        column = table[:, i]
        if np.dtype(code).kind in "iu":
            limits = np.iinfo(code)
            if not (np.isfinite(column).all() and (column == np.round(column)).all()
                    and column.min(initial=0) >= limits.min and column.max(initial=0) <= limits.max):
                raise PlyError(f"{name}: ASCII PLY property {key!r} must hold {np.dtype(code).name} integers")
        with np.errstate(over="ignore", invalid="ignore"):
            columns[key] = column.astype(code)
    return columns


def _column(values: dict, key: str, name: str) -> np.ndarray:
    if key not in values:
        raise PlyError(f"{name}: PLY vertex element lacks property {key!r}")
    column = values[key]
    if column.dtype.kind != "f":
        raise PlyError(f"{name}: PLY property {key!r} must be float or double, got {column.dtype}")
    with np.errstate(invalid="ignore"):  # signalling NaNs in the file would warn here
        column = column.astype(np.float64)
    if not np.isfinite(column).all():
        raise PlyError(f"{name}: PLY property {key!r} has non-finite values")
    return column


def _comment_value(comments: list, key: str) -> str | None:
    for comment in comments:
        words = comment.split()
        if len(words) == 2 and words[0] == key:
            return words[1]
    return None


def read_6dgs_ply(path, device="cpu", dtype=torch.float32) -> tuple[Gaussians6D, float]:
    """Read a 6DGS PLY; returns the Gaussians and the ``lambda`` recorded in it (the default when absent).

    Raises :class:`PlyError` naming the file for anything malformed (bad magic/header, truncated data, missing or
    non-float properties, non-finite values, inconsistent SH count, huge declared counts).
    """
    path = Path(path)
    name = str(path)
    values, header = _read_vertices(path)
    rest_names = sorted((k for k in values if k.startswith("f_rest_")), key=lambda k: (len(k), k))
    if rest_names != [f"f_rest_{i}" for i in range(len(rest_names))] or len(rest_names) % 3:
        raise PlyError(f"{name}: f_rest_* properties must be f_rest_0..f_rest_{{3(K-1)-1}}")
    try:
        degree = degree_from_coefficients(len(rest_names) // 3 + 1)
    except ValueError as exc:
        raise PlyError(f"{name}: {exc}") from None
    recorded = _comment_value(header.comments, "sh_degree")
    if recorded is not None and recorded != str(degree):
        raise PlyError(f"{name}: comment says SH degree {recorded!r} but the file has degree-{degree} SH")
    lam_text = _comment_value(header.comments, "lambda")
    try:
        lam = DEFAULT_LAMBDA if lam_text is None else float(lam_text)
    except ValueError:
        lam = math.nan
    if not (math.isfinite(lam) and lam >= 0):
        raise PlyError(f"{name}: invalid lambda comment {lam_text!r}")

    def stack(keys):
        return np.stack([_column(values, k, name) for k in keys], axis=1)

    count = len(next(iter(values.values())))
    coefficients = len(rest_names) // 3 + 1
    sh = np.empty((count, coefficients, 3))
    sh[:, 0] = stack(DC)
    if rest_names:
        sh[:, 1:] = stack(rest_names).reshape(count, 3, coefficients - 1).transpose(0, 2, 1)
    labels = None
    if "label" in values:
        with np.errstate(invalid="ignore"):
            raw = values["label"].astype(np.float64)  # any PLY type; must hold int16 integers
        if not (np.isfinite(raw).all() and (raw == np.round(raw)).all() and raw.min(initial=0) >= -32768
                and raw.max(initial=0) <= 32767):
            raise PlyError(f"{name}: PLY property 'label' must hold int16 integers")
        labels = torch.as_tensor(raw.astype(np.int16), device=device)

    def tensor(array):
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    try:
        gaussians = Gaussians6D(tensor(stack(POSITION)), tensor(stack(DIRECTION)), tensor(stack(DIAGONAL)),
                                tensor(stack(OFFDIAGONAL)), tensor(sh), tensor(_column(values, "opacity", name)),
                                labels).validate()
    except GaussianError as exc:
        raise PlyError(f"{name}: {exc}") from None
    return gaussians, lam


# ---- writing --------------------------------------------------------------------------------------------------
def _write(path, columns: list, comments: list) -> Path:
    """Write ``columns`` ``[(name, numpy array [N])]`` as a binary little-endian vertex element."""
    path = Path(path)
    count = len(columns[0][1]) if columns else 0
    reverse = {"f4": "float", "i2": "short", "f8": "double", "u1": "uchar", "i4": "int"}
    dtype = np.dtype([(key, "<" + np.dtype(array.dtype).str[1:]) for key, array in columns])
    records = np.empty(count, dtype=dtype)
    for key, array in columns:
        records[key] = array
    lines = ["ply", "format binary_little_endian 1.0"] + [f"comment {c}" for c in comments]
    lines.append(f"element vertex {count}")
    lines += [f"property {reverse[np.dtype(array.dtype).str[1:]]} {key}" for key, array in columns]
    lines.append("end_header")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as stream:
            stream.write(("\n".join(lines) + "\n").encode("ascii"))
            stream.write(records.tobytes())
    except OSError as exc:
        raise PlyError(f"{path}: cannot write PLY file: {exc.strerror or exc}") from None
    return path


def write_6dgs_ply(gaussians: Gaussians6D, path, lam: float = DEFAULT_LAMBDA) -> Path:
    """Write Gaussians in the 6DGS layout (float32 values, int16 labels); returns the path."""
    gaussians.validate()
    g = gaussians.detach().to("cpu", torch.float32)
    count, coefficients = len(g), g.sh.shape[1]

    def split(tensor, keys):
        array = tensor.numpy().reshape(count, len(keys))
        return [(key, np.ascontiguousarray(array[:, i])) for i, key in enumerate(keys)]

    rest = g.sh[:, 1:].transpose(1, 2).reshape(count, 3 * (coefficients - 1))
    columns = (split(g.means, POSITION) + split(g.dir_means, DIRECTION) + split(g.sh[:, 0], DC)
               + split(rest, [f"f_rest_{i}" for i in range(3 * (coefficients - 1))])
               + split(g.opacity_logit, ["opacity"]) + split(g.chol_log_diag, DIAGONAL)
               + split(g.chol_offdiag, OFFDIAGONAL))
    if g.labels is not None:
        columns.append(("label", g.labels.numpy().astype(np.int16)))
    return _write(path, columns, ["renderfm 6dgs", f"sh_degree {g.sh_degree}", f"lambda {float(lam)!r}"])


# ---- 3DGS export -----------------------------------------------------------------------------------------------
def export_3dgs_ply(gaussians: Gaussians6D, path, camera_center=None, view_direction=None,
                    lam: float = DEFAULT_LAMBDA) -> Path:
    """Write the Gaussians conditioned for one view as a standard 3DGS PLY (see module docstring).

    Give ``camera_center`` (RAS mm; each Gaussian is seen along its own direction from it) or ``view_direction``
    (a unit vector from the viewer into the scene, the same for all Gaussians). Returns the path.
    """
    from scipy.spatial.transform import Rotation  # scipy comes with scikit-image

    if (camera_center is None) == (view_direction is None):
        raise PlyError(f"{path}: give exactly one of camera_center and view_direction for the 3DGS export")
    gaussians.validate()
    with torch.no_grad():
        g = gaussians.detach().to("cpu", torch.float64)
        if camera_center is not None:
            view = condition(g, torch.as_tensor(camera_center, dtype=torch.float64), lam)
        else:
            direction = torch.nn.functional.normalize(torch.as_tensor(view_direction, dtype=torch.float64), dim=0)
            view = condition_on_directions(g, direction, lam)
    means = view.means.numpy()
    eigenvalues, eigenvectors = np.linalg.eigh(view.covs.numpy())
    eigenvectors[:, :, 2] *= np.sign(np.linalg.det(eigenvectors))[:, None]  # proper rotations
    scales = 0.5 * np.log(np.maximum(eigenvalues, 1e-30))
    quaternions = Rotation.from_matrix(eigenvectors).as_quat(scalar_first=True)  # (w, x, y, z)
    dc = (linear_to_srgb(view.colors.numpy()).astype(np.float64) - 0.5) / C0
    opacity = np.clip(view.opacities.numpy(), 1e-6, 1 - 1e-6)
    count = len(means)

    def cols(array, keys):
        return [(key, np.ascontiguousarray(array[:, i], dtype=np.float32)) for i, key in enumerate(keys)]

    columns = (cols(means, POSITION) + cols(np.zeros((count, 3)), DIRECTION) + cols(dc, DC)
               + cols(np.zeros((count, 45)), [f"f_rest_{i}" for i in range(45)])
               + cols(np.log(opacity / (1 - opacity))[:, None], ["opacity"])
               + cols(scales, [f"scale_{i}" for i in range(3)]) + cols(quaternions, [f"rot_{i}" for i in range(4)]))
    return _write(path, columns, ["renderfm 3dgs export (colours sRGB, positions RAS mm)"])
