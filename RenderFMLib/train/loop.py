"""The training loop: one process on a CPU up to many GPUs and nodes under ``torchrun`` (DDP).

Each step every process draws its own sample (seed = ``config.seed``, step and rank), predicts residuals over the
analytic Gaussians, renders the sample's views with the differentiable rasterizer (cpu-fast on a CPU), and takes
the loss ``0.8 L1 + 0.2 (1 - SSIM)`` against the cached cinematic reference; DDP averages the gradients (gloo on
CPU, NCCL on GPU), so all processes keep identical parameters. Process 0 writes a CSV metrics log, checkpoints
(safetensors: model, optimiser state and step — no pickle) and validation on held-out volumes; a restarted run
resumes from the last checkpoint. Every checkpoint also checks that all processes' parameters agree.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..model.predict import apply_residuals
from ..model.unet import RenderFMUNet, UNetConfig
from ..model.weights import ModelHeader, save_model
from ..optimize import image_loss
from ..pipeline import Scene, render_scene
from .cache import ReferenceCache
from .data import Sample, SampleFactory, TrainingSource


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in checkpoints and the weights header)."""

    sources: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    validation: list[str] = field(default_factory=list)
    out_dir: str = "runs/renderfm"
    steps: int = 1000
    lr: float = 3e-4
    spacing_mm: float = 3.0
    crop_voxels: int = 32
    views: int = 2
    image_size: int = 64
    widths: tuple[int, ...] = (8, 16, 32, 64)
    sh_degree: int = 3
    seed: int = 0
    checkpoint_every: int = 50
    validate_every: int = 100
    validation_samples: int = 4
    cache_dir: str | None = None
    max_seconds: float | None = None
    pool_size: int = 32
    new_sample_every: int = 2


class SamplePool:
    """Recently drawn samples, reused for several steps: preparing a sample (crop, illumination, analytic
    Gaussians, reference views) costs more than a training step on a CPU. A new sample is drawn every
    ``new_sample_every`` steps (and until the pool holds ``size``); other steps reuse a random pooled one."""

    def __init__(self, factory: SampleFactory, size: int, new_sample_every: int, seed: int):
        self.factory = factory
        self.size = max(1, size)
        self.every = max(1, new_sample_every)
        self.samples: list[Sample] = []
        self.rng = np.random.default_rng(seed)
        self.seed = seed

    def next(self, step: int) -> Sample:
        if len(self.samples) < self.size or step % self.every == 0:
            sample = self.factory.sample(self.seed * 1_000_003 + step * 1009)
            if len(self.samples) >= self.size:
                self.samples.pop(int(self.rng.integers(len(self.samples))))
            self.samples.append(sample)
            return sample
        return self.samples[int(self.rng.integers(len(self.samples)))]


class Distributed:
    """The process group from ``torchrun``'s environment (or a single process without it)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            # torch._dynamo (imported lazily by the optimisers and DDP) keeps a process group that exists when it is
            # first imported alive past destroy_process_group, its communication threads running until the process
            # exits (see close); imported before the group, it does not (torch 2.13, checked by the tests).
            importlib.import_module("torch._dynamo")

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend=backend)
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        elif self.world > 1:
            _share_cpu_threads()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def parameter_checksums(self, model: torch.nn.Module) -> list[float]:
        """Each process's sum of all parameters (float64); identical values mean the replicas agree."""
        local = torch.tensor([sum(float(p.detach().double().sum()) for p in model.parameters())],
                             dtype=torch.float64, device=self.device)
        if self.world == 1:
            return [float(local)]
        gathered = [torch.zeros_like(local) for _ in range(self.world)]
        torch.distributed.all_gather(gathered, local)
        return [float(t) for t in gathered]

    def stop_flag(self, stop: bool) -> bool:
        """True on every process if any process wants to stop (time budget)."""
        if self.world == 1:
            return stop
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def close(self, completed: bool) -> None:
        """Leave the process group. After a completed run every process first waits for the others, so none tears
        down its connections while another still uses them (after a failure the others may never arrive: no wait).
        Destroying the group stops its communication threads here, unless something still holds the group (drop
        the DDP wrapper first). Threads left running while the process exits are the likely cause of a rare abort
        of a finished CPU run ("terminate called without an active exception"), seen twice and not reproduced."""
        if self.world > 1:
            if completed:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def _share_cpu_threads() -> None:
    """Give the numba kernels (cpu-fast rendering) the same thread count as torch in this process. ``torchrun``
    sets ``OMP_NUM_THREADS`` (default 1) per process so that processes don't oversubscribe the cores; numba does
    not read it and would start a thread per core in every process."""
    from ..raster import backend_status

    if backend_status("cpu-fast") is not None:  # no numba: nothing to configure
        return
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def sample_scene(sample: Sample, gaussians=None) -> Scene:
    """A :class:`Scene` view of a training sample (for rendering its Gaussians)."""
    return Scene(gaussians=sample.analytic.gaussians if gaussians is None else gaussians, working=sample.working,
                 tf=sample.tf, lighting=sample.lighting, illumination=sample.analytic.illumination,
                 method="analytic", device=sample.features.device, prep_seconds=0.0)


def predict_sample(model: torch.nn.Module, sample: Sample, config: TrainConfig):
    """Gaussians for a sample: analytic + network residuals read at the Gaussians' voxels (differentiable)."""
    from ..model.features import pad_to_multiple

    padded, sizes = pad_to_multiple(sample.features, UNetConfig(widths=tuple(config.widths)).divisor)
    output = model(padded[None])[0][:, :sizes[0], :sizes[1], :sizes[2]]
    residuals = output.reshape(output.shape[0], -1)[:, sample.analytic.voxel_index].T
    spacing = float(np.mean(sample.working.spacing))
    return apply_residuals(sample.analytic.gaussians, residuals, spacing, config.sh_degree)


def sample_loss(model, sample: Sample, config: TrainConfig) -> torch.Tensor:
    """Mean image loss over the sample's views."""
    scene = sample_scene(sample, predict_sample(model, sample, config))
    losses = []
    for camera, target in zip(sample.cameras, sample.targets, strict=True):
        rgb, _ = render_scene(scene, camera, differentiable=True)
        losses.append(image_loss(rgb, target))
    return torch.stack(losses).mean()


def evaluate_samples(model, samples: list[Sample], config: TrainConfig) -> dict:
    """Mean PSNR of the analytic initialisation and of the model over the samples' views."""
    from ..metrics import psnr

    scores = {"analytic": [], "model": []}
    with torch.no_grad():
        for sample in samples:
            predicted = predict_sample(model, sample, config)
            for name, gaussians in (("analytic", sample.analytic.gaussians), ("model", predicted)):
                scene = sample_scene(sample, gaussians)
                for camera, target in zip(sample.cameras, sample.targets, strict=True):
                    image = render_scene(scene, camera)
                    scores[name].append(psnr(image.rgb, target.cpu().numpy()))
    return {name: float(np.mean(values)) for name, values in scores.items()}


# ---- checkpoints (safetensors only) ----------------------------------------------------------------------------
def save_checkpoint(path: Path, model: RenderFMUNet, optimizer: torch.optim.Optimizer, step: int,
                    config: TrainConfig) -> None:
    """Model parameters, Adam moments and the step, atomically, as safetensors."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().reshape(-1).contiguous() \
                if key == "step" else value.detach().cpu().contiguous()
    meta = {"step": str(step), "config": json.dumps(asdict(config)),
            "param_groups": json.dumps([{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]])}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: RenderFMUNet, optimizer: torch.optim.Optimizer) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns the step to continue from."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.reshape(()) if name == "step" else value
    groups = json.loads(meta["param_groups"])
    current = optimizer.state_dict()
    for group, saved in zip(current["param_groups"], groups, strict=True):
        group.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    return int(meta["step"])


# ---- the run ---------------------------------------------------------------------------------------------------
def train(config: TrainConfig, log=print) -> Path:
    """Run (or resume) training; returns the path of the final weights (``out_dir/renderfm_unet.safetensors``)."""
    dist = Distributed()
    torch.manual_seed(config.seed)  # identical initial parameters on every process
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = ReferenceCache(config.cache_dir or out / "reference_cache")
    sources = [TrainingSource(s, config.labels.get(s)) for s in config.sources]
    factory = SampleFactory(sources, config.spacing_mm, config.crop_voxels, config.views, config.image_size,
                            cache, device=dist.device)
    model_config = UNetConfig(widths=tuple(config.widths), sh_degree=config.sh_degree)
    model = RenderFMUNet(model_config).to(dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    checkpoint = out / "checkpoint.safetensors"
    step = load_checkpoint(checkpoint, model, optimizer) if checkpoint.is_file() else 0
    if step and dist.is_main:
        log(f"resumed from {checkpoint} at step {step}")
    trained = dist.wrap(model)
    validation = []
    if config.validation and dist.is_main:
        val_factory = SampleFactory([TrainingSource(s) for s in config.validation], config.spacing_mm,
                                    config.crop_voxels, config.views, config.image_size, cache,
                                    perturb_probability=0.0, subset_probability=0.0, augment=False,
                                    device=dist.device)
        validation = [val_factory.sample(10_000 + i) for i in range(config.validation_samples)]
    metrics_path = out / "metrics.csv"
    new_log = not metrics_path.is_file()
    metrics_file = open(metrics_path, "a", newline="") if dist.is_main else None
    writer = csv.writer(metrics_file) if metrics_file else None
    if writer and new_log:
        writer.writerow(["step", "seconds", "loss", "val_psnr_analytic", "val_psnr_model", "checksums", "sample"])
    pool = SamplePool(factory, config.pool_size, config.new_sample_every, config.seed * 7919 + dist.rank)
    start = time.perf_counter()
    losses: list[float] = []
    completed = False
    try:
        while step < config.steps:
            sample = pool.next(step)
            loss = sample_loss(trained, sample, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            elapsed = time.perf_counter() - start
            out_of_time = config.max_seconds is not None and elapsed > config.max_seconds
            stop = dist.stop_flag(out_of_time)
            val = {}
            if validation and (step % config.validate_every == 0 or step == config.steps or stop):
                val = evaluate_samples(model, validation, config)
            checksums = ""
            if step % config.checkpoint_every == 0 or step == config.steps or stop:
                sums = dist.parameter_checksums(model)
                if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
                    raise RuntimeError(f"DDP replicas diverged at step {step}: parameter sums {sums}")
                checksums = " ".join(f"{s:.10e}" for s in sums)
                if dist.is_main:
                    save_checkpoint(checkpoint, model, optimizer, step, config)
            if writer:
                writer.writerow([step, round(elapsed, 2), round(float(np.mean(losses[-10:])), 5),
                                 round(val.get("analytic", math.nan), 3), round(val.get("model", math.nan), 3),
                                 checksums, sample.description])
                metrics_file.flush()
                if step % 10 == 0 or val:
                    log(f"step {step}/{config.steps} loss {np.mean(losses[-10:]):.4f} {elapsed:.0f}s"
                        + (f" val PSNR analytic {val['analytic']:.2f} model {val['model']:.2f}" if val else ""))
            if stop:
                break
        weights = out / "renderfm_unet.safetensors"
        if dist.is_main:
            header = ModelHeader(model_config, config.spacing_mm, training={
                "steps": step, "config": asdict(config), "world_size": dist.world,
                "device": str(dist.device), "seconds": round(time.perf_counter() - start, 1)})
            save_model(model, header, weights)
        completed = True
        return weights
    finally:
        if metrics_file:
            metrics_file.close()
        trained = None  # the DDP wrapper holds the process group: release it before the group is destroyed
        dist.close(completed)
        sys.stdout.flush()
