"""What CUDA reports and what the executor asks of it, behind one seam.

Placement (which GPU a worker uses), precision (native bf16 or not), the token budget (free memory) and releasing
a model (memory returned) go through the functions here and nowhere else, so tests can replace them: in-process by
monkeypatching :func:`cuda_devices` and friends, and in Spark's Python workers (other processes, where a
monkeypatch cannot reach) by setting ``USER_SPARK_TEST_FAKE_GPUS=N`` on the executors. Then this process reports
``N`` GPUs of 16 GiB with native bf16 that compute on the CPU: the executor code path runs unchanged (placement,
worker reuse across GPU addresses, release, the pipelined GPU loop) on a machine without CUDA. Nothing else in
user_spark reads that variable.
"""

from __future__ import annotations

import functools
import gc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENV_FAKE",
    "GpuInfo",
    "allocated_bytes",
    "available_bytes",
    "compute_device",
    "cuda_devices",
    "free_bytes",
    "is_fake",
    "release_memory",
    "torch_cuda_build",
]

ENV_FAKE = "USER_SPARK_TEST_FAKE_GPUS"
_FAKE_TOTAL = 16 << 30


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as this process sees it.

    Attributes:
        ordinal: its index in this process (``cuda:N``), after ``CUDA_VISIBLE_DEVICES`` renumbering.
        name: e.g. ``"NVIDIA H100 80GB HBM3"``.
        uuid: the same for every process on the node, however each one's devices are numbered.
        total_bytes: its memory.
        capability: CUDA compute capability, e.g. ``(9, 0)``.
    """

    ordinal: int
    name: str
    uuid: str
    total_bytes: int
    capability: tuple[int, int]

    @property
    def native_bf16(self) -> bool:
        """bf16 tensor cores (Ampere, compute capability 8.0, and later); older GPUs emulate it slowly or not at all."""
        return self.capability >= (8, 0)

    @property
    def device(self) -> str:
        return f"cuda:{self.ordinal}"


def _fake_count() -> int:
    value = os.environ.get(ENV_FAKE, "").strip()
    return int(value) if value.isdigit() else 0


def is_fake() -> bool:
    """True when ``USER_SPARK_TEST_FAKE_GPUS`` makes this process pretend to have GPUs (tests only)."""
    return _fake_count() > 0


def cuda_devices() -> tuple[GpuInfo, ...]:
    """The CUDA devices this process can use; empty without CUDA (a CPU build of torch, no driver, no GPU)."""
    fake = _fake_count()
    if fake:
        return tuple(GpuInfo(i, "fake GPU (computes on the CPU)", f"fake-{i}", _FAKE_TOTAL, (8, 0))
                     for i in range(fake))
    return _real_devices()


@functools.lru_cache(maxsize=1)
def _real_devices() -> tuple[GpuInfo, ...]:
    import torch

    if not torch.cuda.is_available():
        return ()
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        uuid = str(getattr(props, "uuid", "") or f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}#{i}")
        out.append(GpuInfo(i, props.name, uuid, int(props.total_memory), (props.major, props.minor)))
    return tuple(out)


def torch_cuda_build() -> str:
    """What this torch was built for, for messages: ``"2.13.0+cpu (no CUDA)"`` or ``"2.11.0+cu130"``."""
    import torch

    cuda = getattr(torch.version, "cuda", None)
    return f"{torch.__version__}" + ("" if cuda else " (no CUDA)")


def compute_device(device: str) -> torch.device:
    """The torch device that runs work placed on ``device``: itself, or the CPU for a fake GPU."""
    import torch

    if device.startswith("cuda") and is_fake():
        return torch.device("cpu")
    return torch.device(device)


def _ordinal(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def free_bytes(device: str) -> int:
    """Memory free on ``device`` now, as the driver reports it (all processes' allocations counted)."""
    if is_fake():
        return _FAKE_TOTAL
    import torch

    free, _ = torch.cuda.mem_get_info(_ordinal(device))
    return int(free)


def available_bytes(device: str) -> int:
    """Memory this process could use on ``device`` now: the driver's free memory plus the blocks PyTorch's caching
    allocator holds for this process but no tensor uses."""
    if is_fake():
        return _FAKE_TOTAL
    import torch

    ordinal = _ordinal(device)
    free, _ = torch.cuda.mem_get_info(ordinal)
    return int(free) + int(torch.cuda.memory_reserved(ordinal)) - int(torch.cuda.memory_allocated(ordinal))


def allocated_bytes(device: str) -> int:
    """Memory this process's tensors hold on ``device`` (0 for a fake GPU)."""
    if is_fake():
        return 0
    import torch

    return int(torch.cuda.memory_allocated(_ordinal(device)))


def release_memory(device: str) -> int:
    """Collect garbage and hand ``device``'s cached blocks back to the driver; returns the bytes still allocated.

    Dropping the last reference to a model frees its tensors into PyTorch's caching allocator, which keeps the
    memory for this process; ``empty_cache`` returns it so that another process (or another GPU's model in this
    one) can use it. The CUDA context itself (~0.3-0.5 GiB) stays until the process exits: CUDA cannot destroy a
    primary context that PyTorch may still use.
    """
    gc.collect()
    if not device.startswith("cuda") or is_fake():
        return 0
    import torch

    with torch.cuda.device(_ordinal(device)):
        torch.cuda.synchronize()
        # cuBLAS keeps its workspaces (MiBs per stream) in the caching allocator until told otherwise.
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            clear_workspaces()
        torch.cuda.empty_cache()
    return allocated_bytes(device)
