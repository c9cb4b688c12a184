"""PLY files: exact 6DGS round trip, other encodings, malformed files (fuzzed), and the 3DGS export."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from RenderFMLib.conditioning import condition
from RenderFMLib.errors import PlyError
from RenderFMLib.gaussians import PARAMETER_NAMES, Gaussians6D
from RenderFMLib.image import linear_to_srgb
from RenderFMLib.ply import _read_vertices, export_3dgs_ply, read_6dgs_ply, write_6dgs_ply
from RenderFMLib.sh import C0


@pytest.fixture
def scene(random_gaussians):
    """``scene(count=64, degree=3, labels=True, seed=0)``: random Gaussians over about +-80 mm with wide Cholesky
    factors and, with ``labels``, int16 labels in -5..299 (negative ones too)."""
    def make(count=64, degree=3, labels=True, seed=0) -> Gaussians6D:
        return random_gaussians(count, degree, "random" if labels else False, seed, position=80.0, log_diag=1.0)

    return make


def assert_same(a: Gaussians6D, b: Gaussians6D) -> None:
    for name in PARAMETER_NAMES:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("degree, labels", [(3, True), (0, False), (1, True)])
def test_round_trip_is_exact(tmp_path, degree, labels, scene):
    g = scene(degree=degree, labels=labels)
    path = write_6dgs_ply(g, tmp_path / "sub" / "scene.ply", lam=0.2)
    back, lam = read_6dgs_ply(path)
    assert lam == 0.2
    assert_same(g, back)
    header = path.read_bytes()[:2000].decode("ascii", "replace")
    assert header.startswith("ply\nformat binary_little_endian 1.0\n")
    for name in ("property float nx", "property float f_dc_0", "property float opacity", "property float diags_5",
                 "property float l_triangs_14", f"comment sh_degree {degree}"):
        assert name in header
    assert ("property short label" in header) == labels
    empty, _ = read_6dgs_ply(write_6dgs_ply(g[:0], tmp_path / "empty.ply"))
    assert len(empty) == 0


def _table(g: Gaussians6D) -> tuple[list[str], np.ndarray]:
    """Property names and float64 rows in the 6DGS layout, for writing other encodings by hand."""
    count, coefficients = len(g), g.sh.shape[1]
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
             + [f"f_rest_{i}" for i in range(3 * (coefficients - 1))] + ["opacity"]
             + [f"diags_{i}" for i in range(6)] + [f"l_triangs_{i}" for i in range(15)])
    rest = g.sh[:, 1:].transpose(1, 2).reshape(count, -1)
    rows = torch.cat([g.means, g.dir_means, g.sh[:, 0], rest, g.opacity_logit[:, None], g.chol_log_diag,
                      g.chol_offdiag], dim=1).double().numpy()
    return names, rows


def test_reads_ascii_big_endian_and_the_6dgs_authors_layout(tmp_path, scene):
    g = scene(count=12, degree=1, labels=False)
    names, rows = _table(g)
    header = "ply\nformat {}\nelement vertex 12\n" + "".join(f"property float {n}\n" for n in names) + "end_header\n"
    ascii_path = tmp_path / "ascii.ply"
    body = "\n".join(" ".join(repr(float(np.float32(v))) for v in row) for row in rows) + "\n"
    ascii_path.write_text(header.format("ascii 1.0") + body)
    big_path = tmp_path / "big.ply"
    big_path.write_bytes(header.format("binary_big_endian 1.0").encode() + rows.astype(">f4").tobytes())
    for path in (ascii_path, big_path):
        back, lam = read_6dgs_ply(path)  # no comments, no label: the 6DGS authors' files look like this
        assert lam == 0.35
        assert_same(g, back)


def test_double_precision_and_extra_elements(tmp_path, scene):
    g = scene(count=5, degree=0, labels=False)
    names, rows = _table(g)
    header = ("ply\nformat binary_little_endian 1.0\ncomment made by hand\nelement camera 2\nproperty double f\n"
              "element vertex 5\n" + "".join(f"property double {n}\n" for n in names)
              + "element face 1\nproperty list uchar int vertex_indices\nend_header\n")
    path = tmp_path / "double.ply"
    path.write_bytes(header.encode() + np.zeros(2).astype("<f8").tobytes() + rows.astype("<f8").tobytes()
                     + bytes([3, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]))
    back, _ = read_6dgs_ply(path)
    assert torch.allclose(back.means, g.means) and back.means.dtype == torch.float32


@pytest.mark.parametrize("edit, message", [
    (lambda h, d: (h.replace(b"ply\n", b"plx\n", 1), d), "not a PLY file"),
    (lambda h, d: (h.replace(b"end_header\n", b""), d), "end_header"),
    (lambda h, d: (h.replace(b"property float opacity\n", b"property float opacity_\n"), d), "lacks.*'opacity'"),
    (lambda h, d: (h.replace(b"element vertex 64", b"element vertex 99999999999999"), d), "truncated"),
    (lambda h, d: (h, d[:-10]), "truncated"),
    (lambda h, d: (h.replace(b"property float x\n", b"property list uchar float x\n"), d), "list"),
    (lambda h, d: (h.replace(b"property float y\n", b"property int y\n"), d), "float"),
    (lambda h, d: (h.replace(b"property float z\n", b"property quad z\n"), d), "property TYPE NAME"),
    (lambda h, d: (h.replace(b"binary_little_endian", b"binary_middle_endian"), d), "format"),
    (lambda h, d: (h.replace(b"comment sh_degree 3", b"comment sh_degree 2"), d), "SH degree"),
    (lambda h, d: (h.replace(b"comment lambda 0.35", b"comment lambda nan"), d), "lambda"),
    (lambda h, d: (h.replace(b"property float f_rest_7\n", b"property float f_rest_x\n"), d), "f_rest"),
    (lambda h, d: (h.replace(b"property short label", b"property ushort label"), d), "label"),
    (lambda h, d: (h.replace(b"element vertex", b"element point"), d), "no 'vertex'"),
    (lambda h, d: (h, np.frombuffer(d, "<f4").copy().astype("<f4").__setitem__(0, np.nan) or d), None),
])
def test_malformed_files_give_clean_errors(tmp_path, edit, message, scene):
    path = write_6dgs_ply(scene(), tmp_path / "good.ply")
    raw = path.read_bytes()
    split = raw.index(b"end_header\n") + len(b"end_header\n")
    header, data = edit(raw[:split], raw[split:])
    if message is None:  # a NaN in the data
        values = np.frombuffer(data, dtype=np.uint8).copy()
        values[:4] = np.frombuffer(np.float32(np.nan).tobytes(), dtype=np.uint8)
        data, message = values.tobytes(), "non-finite"
    bad = tmp_path / "bad.ply"
    bad.write_bytes(header + data)
    with pytest.raises(PlyError, match=message) as info:
        read_6dgs_ply(bad)
    assert str(bad) in str(info.value)


def test_missing_file_and_non_ascii_header(tmp_path):
    with pytest.raises(PlyError, match="cannot read"):
        read_6dgs_ply(tmp_path / "nope.ply")
    path = tmp_path / "weird.ply"
    path.write_bytes(b"ply\nformat ascii 1.0\ncomment \xff\xfe\nend_header\n")
    with pytest.raises(PlyError, match="non-ASCII"):
        read_6dgs_ply(path)


def _ascii_copy(binary: bytes) -> bytes:
    """The same PLY in ASCII encoding (the test writer above produces binary only)."""
    split = binary.index(b"end_header\n") + len(b"end_header\n")
    header = binary[:split].decode("ascii")
    names = [line.split()[2] for line in header.splitlines() if line.startswith("property")]
    codes = ["<i2" if line.split()[1] == "short" else "<f4" for line in header.splitlines()
             if line.startswith("property")]
    rows = np.frombuffer(binary[split:], dtype=np.dtype(list(zip(names, codes, strict=True))))
    body = "\n".join(" ".join(repr(v.item()) for v in row) for row in rows) + "\n"
    return (header.replace("binary_little_endian", "ascii") + body).encode("ascii")


def test_fuzzed_files_load_or_raise_ply_error(tmp_path, scene):
    rng = random.Random(1234)
    binary = write_6dgs_ply(scene(count=20, degree=1), tmp_path / "good.ply").read_bytes()
    assert len(read_6dgs_ply(tmp_path / "good.ply")[0]) == 20
    originals = [binary, _ascii_copy(binary)]
    (tmp_path / "ascii.ply").write_bytes(originals[1])
    assert_same(read_6dgs_ply(tmp_path / "good.ply")[0], read_6dgs_ply(tmp_path / "ascii.ply")[0])
    tokens = [b"element", b"property", b"float", b"list", b"vertex", b"-1", b"99999999999", b"nan", b"\x00",
              b"uchar", b"double", b"ascii", b"end_header", b"comment", b"1e400"]
    outcomes = {"loaded": 0, "error": 0}
    for trial in range(400):
        original = originals[trial % 2]
        split = original.index(b"end_header\n") + len(b"end_header\n")
        header_lines = original[:split].split(b"\n")
        data = bytearray(original)
        kind = (trial // 2) % 5
        if kind == 0:  # truncate anywhere
            data = data[:rng.randrange(len(data))]
        elif kind == 1:  # overwrite random bytes anywhere (ASCII data: with plausible characters too)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.choice([rng.randrange(256), ord(rng.choice("-.e9 \nna"))])
        elif kind == 2:  # overwrite bytes in the header only
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(split)] = rng.randrange(256)
        elif kind == 3:  # replace a header word by a plausible token
            lines = list(header_lines)
            line = rng.randrange(len(lines))
            words = lines[line].split(b" ")
            words[rng.randrange(len(words))] = rng.choice(tokens)
            lines[line] = b" ".join(words)
            data = bytearray(b"\n".join(lines)) + original[split:]
        else:  # delete or duplicate a header line
            lines = list(header_lines)
            line = rng.randrange(len(lines) - 1)
            if rng.random() < 0.5:
                del lines[line]
            else:
                lines.insert(line, lines[line])
            data = bytearray(b"\n".join(lines)) + original[split:]
        path = tmp_path / f"fuzz{trial}.ply"
        path.write_bytes(bytes(data))
        try:
            gaussians, lam = read_6dgs_ply(path)
        except PlyError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
        else:
            gaussians.validate()
            assert math.isfinite(lam)
            outcomes["loaded"] += 1
        path.unlink()
    assert outcomes["error"] > 150 and outcomes["loaded"] > 10


def test_3dgs_export(tmp_path, scene):
    g = scene(count=30, degree=3, labels=True)
    center = np.array([0.0, -400.0, 50.0])
    path = export_3dgs_ply(g, tmp_path / "export.ply", camera_center=center)
    values, header = _read_vertices(path)
    expected_names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                      + [f"f_rest_{i}" for i in range(45)] + ["opacity"] + [f"scale_{i}" for i in range(3)]
                      + [f"rot_{i}" for i in range(4)])
    assert list(values) == expected_names
    view = condition(g.to(dtype=torch.float64), torch.from_numpy(center))
    np.testing.assert_allclose(np.stack([values[k] for k in "xyz"], 1), view.means.numpy(), rtol=1e-6, atol=1e-4)
    # covariance rebuilt the way 3DGS viewers do: R(q) diag(exp(scale))^2 R(q)^T
    w, x, y, z = (values[f"rot_{i}"].astype(np.float64) for i in range(4))
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    rot = np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                    np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                    np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)
    scales = np.exp(np.stack([values[f"scale_{i}"] for i in range(3)], 1).astype(np.float64))
    cov = rot @ (scales[:, :, None] ** 2 * np.eye(3)) @ rot.transpose(0, 2, 1)
    reference = view.covs.numpy()
    np.testing.assert_allclose(cov, reference, atol=1e-5 * np.abs(reference).max())
    opacity = 1 / (1 + np.exp(-values["opacity"].astype(np.float64)))
    np.testing.assert_allclose(opacity, np.clip(view.opacities.numpy(), 1e-6, 1 - 1e-6), rtol=1e-5, atol=1e-6)
    dc = np.stack([values[f"f_dc_{i}"] for i in range(3)], 1)
    np.testing.assert_allclose(dc * C0 + 0.5, linear_to_srgb(view.colors.numpy()), atol=1e-5)
    assert not any(values[f"f_rest_{i}"].any() for i in range(45))
    shared = export_3dgs_ply(g, tmp_path / "dir.ply", view_direction=(0.0, 1.0, 0.0))
    assert _read_vertices(shared)[0]["x"].shape == (30,)
    with pytest.raises(PlyError, match="exactly one"):
        export_3dgs_ply(g, tmp_path / "x.ply")
