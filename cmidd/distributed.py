"""Data-parallel evaluation under ``torchrun --nproc_per_node=N launch.py task=evaluate ...``.

One process per device; torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``) starts the process group: NCCL on CUDA, gloo on the CPU. Every process replays
the same random streams and draws the same whole batch; each trains on its contiguous share of
the rows, and DistributedDataParallel averages the gradients. A loss written as a sum over the
batch divided by the *whole* batch's size and multiplied by the world size therefore has the
one-process gradient, whatever the shares' sizes. BatchNorm statistics are each process's own,
as in any DDP training.
"""

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError
from .runtime import resolve_device


def launched() -> bool:
    """Whether torchrun started more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str) -> torch.device:
    """The device of this process; joins the process group when launched by torchrun."""
    device = resolve_device(device_name)
    if device.type == "cuda" and launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if launched() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def rank() -> int:
    """This process's rank: the process group's, or torchrun's before the group exists."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def share(batch):
    """This process's contiguous share of the rows of ``batch`` (a tensor, or images a storage
    serves by slices), split as ``tensor_split`` splits."""
    if size() == 1:
        return batch
    if len(batch) < size():
        raise UserError(f"a batch of {len(batch)} rows cannot be shared by {size()} processes")
    base, extra = divmod(len(batch), size())
    start = rank() * base + min(rank(), extra)
    return batch[start : start + base + (rank() < extra)]


def one_process(what: str) -> None:
    """Refuse work that has no data-parallel form under torchrun."""
    if launched():
        raise UserError(
            f"{what} runs in one process: only task=evaluate with eval=kd is data-parallel "
            "under torchrun (distill first, then evaluate its synthetic.pt under torchrun)"
        )


def wrap(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with its gradients averaged over the processes (and rank 0's initial weights)."""
    if size() == 1:
        return net
    device_ids = [net_device(net)] if net_device(net).type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids)


def net_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def total(count: float, device: torch.device) -> float:
    """``count`` summed over the processes."""
    if size() == 1:
        return count
    value = torch.tensor([float(count)], dtype=torch.float64, device=device)
    dist.all_reduce(value)
    return value.item()


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
