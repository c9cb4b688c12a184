"""Shared pytest fixtures and marker handling for the RenderFM test suite.

Fixtures: ``repo_root`` (the repository folder), ``shared_data`` (``repo_root/../shared/data``, or a skip when it is
absent), ``phantom`` (the procedural torso at 3 mm, built once per session) and ``small_volume`` (the same torso at
6 mm, 60x43x67 voxels, for fast renderer tests). Session fixtures are shared: copy arrays before changing them.

Markers (declared in pyproject.toml): tests marked ``data`` are skipped when the shared real-CT folder is absent;
tests marked ``gpu`` are skipped when torch sees no CUDA device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
def small_volume():
    """A small CT volume (the torso phantom, seed 0, at 6 mm: 60x43x67 voxels) for fast rendering tests."""
    from RenderFMLib.phantom import make_phantom

    return make_phantom(seed=0, spacing_mm=6.0).volume
