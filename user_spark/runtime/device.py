"""Which device, dtype and thread count an executor task embeds with.

:func:`choose_device` is a pure function of what the task knows (the GPU addresses Spark assigned it, the
CUDA devices the process can see, the task's CPU count), so tests drive it with made-up resource info on a
CPU-only machine. :func:`task_device` gathers those facts on the executor and calls it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from user_spark.errors import OptionError
from user_spark.runtime.settings import (
    DeviceRequest,
    Precision,
    check_device_request,
    check_precision,
)

__all__ = [
    "DeviceChoice",
    "choose_device",
    "cpu_has_native_bf16",
    "task_device",
]

logger = logging.getLogger(__name__)


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how a task runs the model.

    Attributes:
        device: a torch device string, ``"cpu"`` or ``"cuda:N"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``, or ``"int8"`` (CPU: int8 weights, dynamically
            quantised activations, fp32 accumulation).
        threads: torch intra-op threads on CPU (the task's cores); ``None`` on GPU.
    """

    device: str
    dtype: str
    threads: int | None

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def _cuda_ordinal(address: str, visible_devices: str | None, device_count: int) -> int:
    """Map a Spark GPU address to a CUDA ordinal inside this process.

    Spark's addresses are what the discovery script printed, usually physical indices. When the cluster
    manager also restricts ``CUDA_VISIBLE_DEVICES`` (YARN, Kubernetes device plugins), the process sees its
    GPUs renumbered from 0, so the address is looked up in that list.
    """
    if visible_devices:
        visible = [v.strip() for v in visible_devices.split(",") if v.strip()]
        if address in visible:
            return visible.index(address)
    if address.isdigit() and int(address) < device_count:
        return int(address)
    if device_count == 1:
        return 0
    raise OptionError(
        f"Spark assigned GPU address {address!r}, which this process cannot map to one of its "
        f"{device_count} visible CUDA devices (CUDA_VISIBLE_DEVICES={visible_devices!r}); check the GPU "
        "discovery script"
    )


def choose_device(
    *,
    requested: DeviceRequest = "auto",
    precision: Precision = "auto",
    gpu_addresses: Sequence[str] = (),
    cuda_device_count: int = 0,
    visible_devices: str | None = None,
    task_cpus: int = 1,
    threads: int | None = None,
    cpu_bf16: bool = False,
) -> DeviceChoice:
    """Decide device, dtype and threads for one task.

    Args:
        requested: ``"auto"`` (the task's GPU, else any visible GPU, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        precision: ``"auto"`` (fp16 on GPU, exact fp32 on CPU), ``"fast"`` (fp16 on GPU; on CPU bf16 where
            the CPU computes bf16 natively, else fp32: emulated bf16 is slower than fp32 and int8 costs too
            much quality to be a default, see docs/BENCHMARKS.md), ``"fp32"``, ``"fp16"`` (GPU), ``"bf16"`` or
            ``"int8"`` (CPU, opt-in).
        gpu_addresses: ``TaskContext.resources()["gpu"].addresses``; empty when Spark assigned none.
        cuda_device_count: ``torch.cuda.device_count()`` in this process.
        visible_devices: ``CUDA_VISIBLE_DEVICES`` of this process.
        task_cpus: cores Spark gave the task (``spark.task.cpus``).
        threads: explicit torch thread count on CPU; default ``task_cpus``, so concurrent tasks on one
            executor do not oversubscribe its cores.
        cpu_bf16: the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).

    Returns:
        A :class:`DeviceChoice`.

    Raises:
        OptionError: for an unknown request or precision, or CUDA asked for where there is none.

    >>> choose_device(gpu_addresses=["1"], cuda_device_count=2)
    DeviceChoice(device='cuda:1', dtype='float16', threads=None)
    >>> choose_device(task_cpus=2)
    DeviceChoice(device='cpu', dtype='float32', threads=2)
    """
    precision = check_precision(precision)
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be >= 1, got {threads}")
    device = _pick_device(check_device_request(requested), gpu_addresses, cuda_device_count, visible_devices)
    on_gpu = device.startswith("cuda")
    dtype = _pick_dtype(precision, on_gpu=on_gpu, cpu_bf16=cpu_bf16)
    return DeviceChoice(device=device, dtype=dtype, threads=None if on_gpu else (threads or max(1, task_cpus)))


def _pick_device(req: str, gpu_addresses: Sequence[str], cuda_device_count: int, visible_devices: str | None) -> str:
    """The torch device for a checked request (see :func:`choose_device`)."""
    if req == "cpu" or (req == "auto" and cuda_device_count == 0):
        return "cpu"
    if req == "auto":
        return f"cuda:{_cuda_ordinal(str(gpu_addresses[0]), visible_devices, cuda_device_count)}" if gpu_addresses \
            else "cuda:0"
    if cuda_device_count == 0:
        raise OptionError(
            f"device={req!r} but this executor sees no CUDA device; use device='auto' to fall back "
            "to CPU, or check the executor's GPU resources"
        )
    if req == "cuda":
        ordinal = _cuda_ordinal(str(gpu_addresses[0]), visible_devices, cuda_device_count) if gpu_addresses else 0
        return f"cuda:{ordinal}"
    ordinal = int(req.split(":", 1)[1])
    if ordinal >= cuda_device_count:
        raise OptionError(f"device={req!r}: this executor has {cuda_device_count} CUDA device(s)")
    return f"cuda:{ordinal}"


def _pick_dtype(precision: Precision, *, on_gpu: bool, cpu_bf16: bool) -> str:
    if precision == "auto":
        dtype = "float16" if on_gpu else "float32"
    elif precision == "fast":
        dtype = "float16" if on_gpu else ("bfloat16" if cpu_bf16 else "float32")
    else:
        dtype = _DTYPES[precision]
    if not on_gpu and dtype == "float16":
        raise OptionError("precision='fp16' needs a GPU; on CPU use 'fast' (bf16 or int8) or 'fp32' (exact)")
    if on_gpu and dtype == "int8":
        raise OptionError("precision='int8' is a CPU mode; on GPU use 'fp16' or 'bf16'")
    return dtype


def task_device(
    requested: DeviceRequest = "auto", precision: Precision = "auto", threads: int | None = None
) -> DeviceChoice:
    """:func:`choose_device` with the facts of the current executor task (works outside Spark too)."""
    import torch
    from pyspark import TaskContext

    ctx = TaskContext.get()
    addresses: Sequence[str] = ()
    task_cpus = 1
    if ctx is not None:
        gpu = ctx.resources().get("gpu")
        if gpu is not None:
            addresses = list(gpu.addresses)
        task_cpus = ctx.cpus()
    else:
        task_cpus = max(1, torch.get_num_threads())
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return choose_device(
        cpu_bf16=cpu_has_native_bf16(),
        requested=requested,
        precision=precision,
        gpu_addresses=addresses,
        cuda_device_count=count,
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        task_cpus=task_cpus,
        threads=threads,
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX); without, bf16 is emulated and
    slower than fp32 (measured: 31 vs 142 GFLOP/s per core on an AVX-512 Xeon without BF16)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
