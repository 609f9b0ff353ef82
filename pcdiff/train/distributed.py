"""Training on many processes with PyTorch's own ``torch.distributed`` (DDP, launched by ``torchrun``).

A :class:`World` is one process's view of the job: its rank, how many processes there are, and the
few collectives training needs. Under ``torchrun`` the environment names the rank (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`init` starts the process
group from it (gloo on CPU, NCCL on CUDA with one GPU per local rank) and :func:`world` describes
whatever group is running. A single process is a world of one, where every collective is the
identity, so training code is written once.

How ``train_codd_layer`` splits its work: every rank draws the *same* global batch from the same
seeded generator and keeps a disjoint part of it (:meth:`World.split`, or :meth:`World.owns` for
cached backbone outputs, which are sharded by owner); each rank's loss is normalized by the global
batch and multiplied by the world size, so DDP's gradient average is the single-process gradient.
The run therefore equals a single-process run with the same batch and seed, up to the order of
floating-point sums.
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import itertools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["World", "world", "launched", "init", "shutdown", "session"]

#: What torchrun sets for every process; :func:`init` needs all of them.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Collectives wait this long for a slow rank (e.g. one still evaluating) before failing.
TIMEOUT = datetime.timedelta(hours=1)
# DDP's switch for syncing buffers at every forward (renamed in torch 2.13)
_BUFFER_SYNC = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
    DistributedDataParallel.__init__).parameters else "broadcast_buffers"


def _running() -> bool:
    return dist.is_available() and dist.is_initialized()


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes (``local_rank`` on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def __post_init__(self):
        if not (isinstance(self.size, int) and self.size >= 1 and isinstance(self.rank, int)
                and 0 <= self.rank < self.size):
            raise ValueError(f"rank must be in [0, size) and size >= 1, got rank={self.rank!r}, size={self.size!r}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    # ------------------------------------------------------------------ sharding
    def split(self, count: int) -> slice:
        """This rank's contiguous part of ``range(count)``; parts differ in size by at most one and
        the lower ranks get the larger ones. Over all ranks the parts tile the range in order."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def owns(self, keys: torch.Tensor) -> torch.Tensor:
        """bool mask of the ``keys`` (integers >= 0) this rank owns: key mod size == rank. An owned key
        is stored at local index ``key // size`` in this rank's shard of a keyed table."""
        return keys % self.size == self.rank

    def shard_size(self, count: int) -> int:
        """How many of the keys ``0 .. count-1`` this rank owns."""
        return len(range(self.rank, count, self.size))

    # ------------------------------------------------------------------ collectives
    def _comm_device(self) -> torch.device:
        # NCCL moves only CUDA tensors; gloo moves CPU ones
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel (gradients averaged over the ranks in backward), or
        ``module`` itself in a world of one. Call the returned module's forward for it to sync."""
        if self.size == 1:
            return module
        device = next(module.parameters()).device
        # buffers are never trained here and DDP's constructor copies rank 0's once: no sync per forward
        no_sync = {_BUFFER_SYNC: False}
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       **no_sync)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over the ranks (a new tensor on ``values``' device)."""
        if self.size == 1:
            return values.clone()
        out = values.detach().to(self._comm_device(), copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(values.device)

    @torch.no_grad()
    def share(self, module: nn.Module) -> None:
        """Overwrite ``module``'s parameters and buffers with rank 0's, in place."""
        if self.size == 1:
            return
        comm = self._comm_device()
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            buffer = tensor.detach() if tensor.device == comm else tensor.detach().to(comm)
            dist.broadcast(buffer, src=0)
            if buffer.data_ptr() != tensor.data_ptr():
                tensor.copy_(buffer)

    def gather(self, obj) -> list:
        """Every rank's (picklable) ``obj``, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def world() -> World:
    """The running process group as a :class:`World` (a world of one when none is initialized)."""
    if not _running():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> bool:
    """True in a process started by torchrun (or the like) as one of several: WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | torch.device = "cpu") -> tuple[World, torch.device]:
    """Start the process group of a torchrun launch; returns (the world, this rank's device).

    gloo for a CPU ``device``; NCCL for CUDA, where each rank takes ``cuda:LOCAL_RANK`` (any index
    in ``device`` is replaced). Outside such a launch: a world of one and ``device`` unchanged. If a
    group is already running (started by the caller), it is used as it is.
    """
    device = torch.device(device)
    if not (launched() or _running()):
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} CUDA devices: "
                             f"launch at most that many processes per machine")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not _running():
        missing = [name for name in ENV_VARS if name not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set: launch with torchrun")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return world(), device


def shutdown() -> None:
    """Destroy the process group, if one is running."""
    if _running():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str | torch.device = "cpu"):
    """``with session(device) as (world, device):`` :func:`init` on entry; on exit, destroy the
    group if this call started it."""
    started = not _running()
    current, device = init(device)
    try:
        yield current, device
        if started:
            current.barrier()      # no rank tears its connections down while another still talks
    finally:
        if started:
            shutdown()
