"""Training: samples with cached ground truth, checkpoints that resume, and DDP replicas that stay identical."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from RenderFMLib.train.cache import ReferenceCache
from RenderFMLib.train.data import SampleFactory, TrainingSource, perturb_tf
from RenderFMLib.train.loop import TrainConfig, train

TINY = dict(spacing_mm=6.0, crop_voxels=20, views=1, image_size=32, widths=(4, 8), sh_degree=1)


def test_samples_are_deterministic_and_reference_is_cached(tmp_path):
    cache = ReferenceCache(tmp_path / "cache")
    factory = SampleFactory([TrainingSource("phantom:1")], TINY["spacing_mm"], TINY["crop_voxels"], 2, 32, cache)
    first = factory.sample(7)
    assert cache.misses == 2 and cache.hits == 0
    again = factory.sample(7)
    assert cache.hits == 2
    assert torch.equal(first.targets, again.targets)
    assert np.array_equal(first.working.array, again.working.array)
    assert first.targets.shape == (2, 32, 32, 3) and float(first.targets.max()) > 0.05
    assert first.features.shape[0] == 6 and len(first.analytic.gaussians) > 0
    other = factory.sample(8)
    assert not np.array_equal(first.working.array, other.working.array) or first.tf.name != other.tf.name


def test_perturbed_tf_stays_valid_and_differs():
    from RenderFMLib.presets import get_preset

    tf = get_preset("CT-Muscle")
    changed = perturb_tf(tf, np.random.default_rng(3))
    assert changed.name.endswith("~perturbed")
    assert not np.allclose(changed.opacity_points, tf.opacity_points)
    assert np.all(np.diff(changed.opacity_points[:, 0]) >= 0)
    assert changed.opacity_points[:, 1].min() >= 0 and changed.opacity_points[:, 1].max() <= 1


def test_training_checkpoints_and_resumes(tmp_path):
    config = TrainConfig(sources=["phantom:1"], validation=["phantom:2"], out_dir=str(tmp_path / "run"), steps=2,
                         checkpoint_every=1, validate_every=2, validation_samples=1, **TINY)
    weights = train(config, log=lambda message: None)
    assert weights.is_file()
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert float(rows[-1]["val_psnr_model"]) > 5
    config.steps = 3
    train(config, log=lambda message: None)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # resumed at step 2, not restarted


def test_two_cpu_processes_keep_identical_parameters(tmp_path, repo_root):
    out = tmp_path / "ddp"
    # faulthandler: if a rank dies from a signal, its Python stack is in stderr (and so in the failure message)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root), "PYTHONFAULTHANDLER": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "RenderFMLib.cli", "train", "phantom:1", "phantom:3", "--out", str(out), "--steps", "3",
               "--checkpoint-every", "1", "--spacing", "6", "--crop", "20", "--views", "1", "--image-size", "32",
               "--widths", "4,8", "--sh-degree", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for row in rows:
        sums = [float(v) for v in row["checksums"].split()]
        assert len(sums) == 2 and sums[0] == sums[1]
    assert rows[0]["checksums"] != rows[-1]["checksums"]  # parameters did change
    assert (out / "renderfm_unet.safetensors").is_file()


CLOSE_SCRIPT = """
import os
import torch
from RenderFMLib.train.loop import Distributed

dist = Distributed()
model = torch.nn.Linear(3, 2)
optimizer = torch.optim.Adam(model.parameters())  # imports torch._dynamo (after the group exists)
wrapped = dist.wrap(model)
wrapped(torch.randn(4, 3)).sum().backward()
optimizer.step()
wrapped = None
dist.close(completed=True)
names = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
print(f"rank {dist.rank}: {sum('gloo' in name for name in names)} gloo threads after close", flush=True)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux /proc")
def test_closing_the_process_group_stops_its_threads(tmp_path, repo_root):
    script = tmp_path / "close.py"
    script.write_text(textwrap.dedent(CLOSE_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root), "PYTHONFAULTHANDLER": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: 0 gloo threads after close" in result.stdout, result.stdout


def test_cpu_processes_give_numba_the_torch_thread_count():
    numba = pytest.importorskip("numba")
    from RenderFMLib.train.loop import _share_cpu_threads

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        torch.set_num_threads(1)
        _share_cpu_threads()
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


@pytest.mark.parametrize("bad", ["/nonexistent/folder"])
def test_train_cli_rejects_missing_data(bad, capsys):
    from RenderFMLib.cli import main

    assert main(["train", bad, "--steps", "1"]) == 1
    assert "not a volume, folder or phantom" in capsys.readouterr().err
