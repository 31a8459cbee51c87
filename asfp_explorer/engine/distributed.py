"""Training on several processes with torchrun and DistributedDataParallel (docs/distributed.md).

    torchrun --nproc_per_node N -m asfp_explorer train ...

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `from_environment`
joins the process group (NCCL on CUDA, each rank on GPU LOCAL_RANK; gloo on the CPU). What a
rank does differently from a single process:

- data: every rank walks the same seeded order of each global batch of `data.batch_size`
  and trains on its slice (rank::world) of it, augmented as in one process, so the global
  batch, the data order and a resume do not depend on the number of ranks;
- gradients are averaged by DDP; losses and correct counts are summed at the epoch's end;
- masks are computed on every rank from the (identical) weights and compared by one
  checksum all-reduce per mask update; a mismatch stops the run with a clear message;
- BatchNorm statistics are per rank (the authors' DataParallel runs) unless
  `training.sync_batchnorm` (SyncBatchNorm; CUDA only in PyTorch);
- only rank 0 writes the run directory and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


class DistributedError(RuntimeError):
    """The ranks disagree (e.g. their masks); the message is one line."""


@dataclass
class DistributedContext:
    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        """The rank's device: GPU LOCAL_RANK with NCCL, the CPU with gloo."""
        if self.backend == "nccl":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
        """DDP around `model` (the trainer keeps the plain module for masks and checkpoints)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        if sync_batchnorm:
            if device.type != "cuda":
                from ..config import ConfigError

                raise ConfigError("training.sync_batchnorm: PyTorch's SyncBatchNorm needs CUDA "
                                  "devices; on the CPU train with per-rank statistics")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        # broadcast_buffers: rank 0's BN running statistics at every forward, so every rank
        # evaluates with the same ones (the ones rank 0 checkpoints).
        return DDP(model, device_ids=ids, broadcast_buffers=True)

    def sum(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Sum over ranks (one all-reduce; at the epoch's end, where the host syncs anyway)."""
        import torch.distributed as dist

        flat = torch.cat([t.detach().double().reshape(1) for t in tensors])
        dist.all_reduce(flat)
        return tuple(flat[i].to(t.dtype) for i, t in enumerate(tensors))

    def check_masks(self, masks: dict[str, torch.Tensor], epoch: int) -> None:
        """Every rank must hold the same masks: per layer, a position-weighted checksum is
        all-reduced with MAX of (c, -c); a layer whose max and min differ names the mismatch."""
        import torch.distributed as dist

        sums = torch.stack([(m.double() * torch.arange(1, m.numel() + 1, device=m.device,
                                                       dtype=torch.float64)).sum()
                            for m in masks.values()])
        both = torch.cat([sums, -sums])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        k = len(sums)
        bad = (both[:k] != -both[k:]).nonzero().flatten().tolist()
        if bad:
            name = list(masks)[bad[0]]
            raise DistributedError(f"distributed: the masks of epoch {epoch} differ between "
                                   f"ranks (layer {name!r} and {len(bad) - 1} more); the "
                                   "ranks' weights diverged, so the run is stopped")

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


_CURRENT: DistributedContext | None = None


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def from_environment(device: str = "auto") -> DistributedContext | None:
    """Join the process group torchrun describes (None when not launched with >1 ranks)."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if not launched_by_torchrun():
        return None
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    _CURRENT = DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _CURRENT


def current() -> DistributedContext | None:
    """The context joined by `from_environment` in this process, or None."""
    return _CURRENT
