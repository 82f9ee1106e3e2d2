"""Distributed data-parallel training (DDP) for both training stages, under ``torchrun``.

A stage whose params ask for ``processes > 1`` re-runs itself under ``torchrun`` on this machine
(:func:`launch`); on several machines, start it with ``torchrun --nnodes ... -m stages.X`` and
it joins the group ``torchrun`` describes. Inside, :func:`process_group` joins the group
(gloo on the CPU, NCCL on GPUs, one GPU per process) and, when the stage returns, holds every
process at a barrier before the group is destroyed: a process that left first made a slower
one abort or hang in its last collective.

What :func:`~pipeline.training.fit.fit` does differently with more than one process:

- every global batch (``batch_size`` samples of the same seeded epoch order as one process)
  is split over the processes, sample ``i`` of it going to rank ``i % world``
  (:class:`RankBatches`); the loss is weighted by each process's share, so the averaged
  gradient is the global batch's, and BatchNorm layers use the global batch's statistics
  (:class:`SyncBatchNorm` on the CPU, torch's on GPUs). With the same seed, 2 processes then
  follow 1 process's loss curve within float rounding, as long as the model draws no random
  numbers (the VAE's reparameterisation noise is drawn per process: same distribution, other
  samples);
- torch's global generator (augmentation, sampling) is reseeded each epoch from
  ``(seed, epoch, rank)``, so a resumed run continues every process's random stream;
- each process scores a share of the validation data; only rank 0 saves checkpoints and runs
  the callbacks (dvclive, best weights); the epoch's terms are averaged over all processes'
  samples. The stages' final metrics and outputs are rank 0's work alone.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

log = logging.getLogger(__name__)

WORLD_ENV = "WORLD_SIZE"
"""Set by torchrun in every process it starts."""
GROUP_TIMEOUT = datetime.timedelta(hours=6)
"""How long a collective waits: the other ranks wait at the final barrier while rank 0 alone
scores the final metrics and writes the outputs (an hour or more at VoxCeleb2's size)."""


def world_size() -> int:
    """Return the number of training processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    """Return this process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Return whether this process writes the outputs (rank 0)."""
    return rank() == 0


def launch(processes: int, module: str, argv: Sequence[str]) -> int | None:
    """Return torchrun's exit code after running ``python -m module argv`` in ``processes``.

    Returns None, doing nothing, when one process is asked for or this process was started
    by torchrun already (then the stage runs here).
    """
    if processes <= 1 or WORLD_ENV in os.environ:
        return None
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", "-m", module, *argv]
    log.info("running %s in %d processes under torchrun", module, processes)
    return subprocess.run(command, check=False).returncode


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join torchrun's process group for the body (nothing when not under torchrun).

    gloo on the CPU; NCCL with one GPU per process (``LOCAL_RANK``) when CUDA is present.
    After a body that returned, every process waits at a barrier before the group is
    destroyed; after one that raised, the group is destroyed at once (torchrun stops the
    others).
    """
    if int(os.environ.get(WORLD_ENV, "1")) <= 1:
        yield
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=GROUP_TIMEOUT)
    log.info("process %d of %d (%s)", rank(), world_size(), dist.get_backend())
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d over the global batch of all processes, on the CPU (gloo).

    torch's :class:`torch.nn.SyncBatchNorm` refuses CPU tensors. In training, the
    per-channel mean and variance are sums over every process's samples (differentiable
    all-reduce: the backward pass carries each process's gradient to the others, as the
    global batch's statistics require); in eval, or in one process, it is BatchNorm2d. Same
    parameters and buffers as BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` ``(B, C, H, W)`` normalised with the global batch's statistics."""
        if not (self.training and world_size() > 1):
            return super().forward(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype)
        dist.all_reduce(count)
        mean = dist_functional.all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = dist_functional.all_reduce(centred.square().sum(dims)) / count
        with torch.no_grad():
            self._update_running_stats(mean, var, count)
        normalised = centred * torch.rsqrt(var + self.eps).view(shape)
        return normalised * self.weight.view(shape) + self.bias.view(shape)

    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor,
                              count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var * count / (count - 1).clamp(min=1), momentum)


def sync_batch_norms(model: nn.Module, cuda: bool) -> dict[str, nn.Module]:
    """Swap every BatchNorm2d of ``model`` for a synchronised one, in place.

    Returns the original modules by name, for :func:`restore_batch_norms`. The new modules
    share the parameters and buffers (the optimiser's parameters stay the same tensors).
    """
    swapped = {}
    for name, module in list(model.named_modules()):
        if type(module) is not nn.BatchNorm2d:
            continue
        synced = (nn.SyncBatchNorm if cuda else SyncBatchNorm)(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats)
        synced.weight, synced.bias = module.weight, module.bias
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(synced, buffer, getattr(module, buffer))
        synced.train(module.training)
        _set_submodule(model, name, synced)
        swapped[name] = module
    return swapped


def restore_batch_norms(model: nn.Module, swapped: dict[str, nn.Module]) -> None:
    """Put back the BatchNorm2d modules :func:`sync_batch_norms` replaced (same tensors)."""
    for name, module in swapped.items():
        synced = model.get_submodule(name)
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(module, buffer, getattr(synced, buffer))
        module.train(synced.training)
        _set_submodule(model, name, module)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


class RankBatches(Sampler[list[int]]):
    """This process's share of each global batch: sample ``i`` goes to rank ``i % world``.

    The global batches are exactly one process's (``BatchSampler`` over a ``RandomSampler``
    drawing from ``generator``), so the data order does not depend on the process count. A
    global batch too small to give every process a sample is skipped on every rank (with a
    warning): a process with nothing to run would leave the others waiting in its all-reduce.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None, rank: int, world: int) -> None:
        super().__init__()
        order = RandomSampler(range(n), generator=generator) if shuffle else SequentialSampler(
            range(n))
        self.batches = BatchSampler(order, batch_size, drop_last=False)
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) < self.world:
                log.warning("skipping a last batch of %d sample(s): fewer than the %d "
                            "processes", len(batch), self.world)
                continue
            yield batch[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.batches)
