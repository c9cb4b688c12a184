"""Shared pytest fixtures and marker handling for the RenderFM test suite.

Fixtures: ``repo_root`` (the repository folder), ``shared_data`` (``repo_root/../shared/data``, or a skip when it is
absent), ``phantom`` (the procedural torso at 3 mm, built once per session), ``small_phantom`` (the same torso at
6 mm, 60x43x67 voxels, with labels) and ``small_volume`` (its HU volume, for fast renderer tests). Session fixtures
are shared: copy arrays before changing them. ``random_gaussians`` makes seeded random 6D Gaussians;
``two_torch_threads`` caps torch at two threads for a test (``pytestmark =
pytest.mark.usefixtures("two_torch_threads")`` for a whole file). OpenMP threads wait passively (see below).

Markers (declared in pyproject.toml): tests marked ``data`` are skipped when the shared real-CT folder is absent;
tests marked ``gpu`` are skipped when torch sees no CUDA device.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# OpenMP threads (torch's and numba's) spin-wait between parallel regions by default. On a 2-core machine shared
# with other work, as CI is, a spinning thread keeps its partner off the CPU and torch's many small parallel regions
# (patch inference, small convolutions) run 10-100x slower (test_pipeline + test_model + test_analytic: 230 s
# spinning, 9 s passive, on the same loaded machine). It must be set before torch or numba load OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Make the library importable from a plain checkout (no `pip install -e .` needed to run the tests).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    data_missing = not SHARED_DATA.is_dir()
    gpu_items = [item for item in items if "gpu" in item.keywords]
    no_gpu = bool(gpu_items) and not _cuda_available()
    for item in items:
        if data_missing and "data" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"real CT folder {SHARED_DATA} is absent"))
        if no_gpu and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false)"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-CT folder ``repo_root/../shared/data`` (see its MANIFEST.md); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CT folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom():
    """The procedural torso phantom (seed 0) at 3 mm: about 120x87x133 voxels, HU volume plus labels."""
    from RenderFMLib.phantom import make_phantom

    return make_phantom(seed=0, spacing_mm=3.0)


@pytest.fixture(scope="session")
def small_phantom():
    """The torso phantom (seed 0) at 6 mm, 60x43x67 voxels: HU volume plus labels, for fast tests."""
    from RenderFMLib.phantom import make_phantom

    return make_phantom(seed=0, spacing_mm=6.0)


@pytest.fixture(scope="session")
def small_volume(small_phantom):
    """A small CT volume (the torso phantom, seed 0, at 6 mm: 60x43x67 voxels) for fast rendering tests."""
    return small_phantom.volume


def make_random_gaussians(count: int = 8, degree: int = 3, labels: bool | str = True, seed: int = 0,
                          dtype=None, position: float = 50.0, direction: float = 1.0, log_diag: float = 0.5,
                          offdiag: float = 1.0, sh: float = 0.3, opacity: float = 1.0):
    """Seeded random :class:`Gaussians6D`: every parameter drawn from N(0, 1) (in the order means, direction
    means, Cholesky log-diagonal, off-diagonal, SH, opacity logit) times its scale. ``labels``: ``True`` gives
    0..count-1, ``"random"`` values in -5..299 (drawn last), ``False`` none. ``dtype`` defaults to float32."""
    import torch

    from RenderFMLib.gaussians import Gaussians6D

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    params = (randn(count, 3) * position, randn(count, 3) * direction, randn(count, 6) * log_diag,
              randn(count, 15) * offdiag, randn(count, (degree + 1) ** 2, 3) * sh, randn(count) * opacity)
    if labels == "random":
        labels = torch.randint(-5, 300, (count,), generator=gen).to(torch.int16)
    else:
        labels = torch.arange(count, dtype=torch.int16) if labels else None
    return Gaussians6D(*params, labels)


@pytest.fixture(scope="session")
def random_gaussians():
    """:func:`make_random_gaussians`: call it with the count, SH degree, seed and scales a test needs."""
    return make_random_gaussians


@pytest.fixture
def two_torch_threads():
    """Run the test with at most two torch threads (the CI machine's cores), restoring the count afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)
