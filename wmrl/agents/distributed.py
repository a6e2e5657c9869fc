"""Data-parallel training over ``torch.distributed``: set-up, gradient averaging, broadcasts.

Every process (one per GPU, or several CPU processes) collects its own experience into its own
replay and computes gradients on its own batches; after each backward pass the gradients are
averaged over the processes with one ``all_reduce`` per parameter group (flattened into a single
buffer, as DDP's buckets), so every process takes the same optimiser step and the parameters,
broadcast from rank 0 at the start, stay identical. This is DDP's scheme (Li et al. 2020,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training", Sec. 3), written as
an explicit step because the Dreamer networks are called many times per backward pass (every
imagined step) and read their inputs by TensorDict keys, which ``DistributedDataParallel``'s
forward wrapper does not accommodate.

Launch with ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``)::

    torchrun --nproc_per_node 4 -m wmrl dreamer --distributed --task cartpole-swingup --pixels
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = [
    "DistributedInfo",
    "init_distributed",
    "is_distributed",
    "average_gradients",
    "broadcast_parameters",
    "all_reduce_mean",
]


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` on the node and
    the ``device`` it computes on.

    The defaults describe a single process on the CPU, as the agents use when not launched with
    ``torchrun``:

    >>> info = DistributedInfo()
    >>> info.rank, info.world_size, info.device, info.is_main
    (0, 1, device(type='cpu'), True)
    >>> DistributedInfo(rank=2, world_size=4).is_main
    False
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, logs and draws figures."""
        return self.rank == 0


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running.

    >>> is_distributed()  # a plain Python process, not launched by torchrun
    False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(backend: str | None = None, device: str | None = None) -> DistributedInfo:
    """Join the process group described by ``torchrun``'s environment variables.

    Args:
        backend: ``"nccl"`` (default with CUDA) or ``"gloo"`` (default on CPU).
        device: ``"cpu"``, ``"cuda"`` (this process uses ``cuda:LOCAL_RANK``) or ``None`` (CUDA
            if available).

    Raises:
        ValueError: the environment variables are missing or the backend is unavailable.

    Outside ``torchrun`` the rendezvous variables are missing, so the call refuses to guess:

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {}, clear=True):  # no torchrun variables
    ...     init_distributed(device="cpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: distributed training needs [...] in the environment: launch with torchrun
    """
    needed = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    missing = [k for k in needed if k not in os.environ]
    if missing:
        raise ValueError(
            f"distributed training needs {missing} in the environment: launch with torchrun"
        )
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this build of torch")
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    backend = backend or ("nccl" if use_cuda else "gloo")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("the gloo backend is not available in this build of torch")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistributedInfo(rank, world, local, dev)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the processes (a no-op in a single process).

    Gradients of one dtype and device are flattened into one buffer and reduced with one
    ``all_reduce``; parameters without a gradient on this process count as zero gradients, so
    every process must pass the same parameters in the same order.

    In a single process the gradients are left as they are:

    >>> net = torch.nn.Linear(2, 1)
    >>> net(torch.ones(1, 2)).sum().backward()
    >>> before = net.weight.grad.clone()
    >>> average_gradients(net.parameters())
    >>> torch.equal(net.weight.grad, before)
    True
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = dist.get_world_size()
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = _flatten_dense_tensors(grads)  # [sum of numels]
        dist.all_reduce(flat)
        flat.div_(world)
        for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(reduced)


def broadcast_parameters(modules: Iterable[torch.nn.Module], src: int = 0) -> None:
    """Copy every parameter and buffer of ``modules`` from process ``src`` to all the others.

    In a single process the parameters are left as they are:

    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Linear(2, 1)
    >>> before = net.weight.detach().clone()
    >>> broadcast_parameters([net])
    >>> torch.equal(net.weight, before)
    True
    """
    if not is_distributed():
        return
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            dist.broadcast(t.data, src)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the processes (``x`` itself in a single process).

    >>> x = torch.tensor([1.0, 3.0])
    >>> all_reduce_mean(x) is x  # one process: the tensor itself, not a copy
    True
    """
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
