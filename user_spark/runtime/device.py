"""Which device, dtype and thread count an executor task embeds with.

:func:`choose_device` is a pure function of what the task knows (the GPU addresses Spark assigned it, the
CUDA devices the process can see, the task's CPU count), so tests drive it with made-up resource info on a
CPU-only machine. :func:`user_spark.runtime.worker.place` gathers those facts on the executor and calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from user_spark.errors import OptionError
from user_spark.runtime.gpu import GpuInfo
from user_spark.runtime.settings import (
    DeviceRequest,
    Precision,
    check_device_request,
    check_precision,
)

__all__ = ["DeviceChoice", "choose_device", "cpu_has_native_bf16"]

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how a task runs the model.

    Attributes:
        device: a torch device string, ``"cpu"`` or ``"cuda:N"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``, or ``"int8"`` (CPU: int8 weights, dynamically
            quantised activations, fp32 accumulation).
        threads: torch intra-op threads on CPU (the task's cores); ``None`` on GPU.
        cpus: the task's cores, which tokenize (on GPU, while the GPU runs the previous batch).
    """

    device: str
    dtype: str
    threads: int | None
    cpus: int = 1

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
    gpus: Sequence[GpuInfo] = (),
    visible_devices: str | None = None,
    task_cpus: int = 1,
    threads: int | None = None,
    cpu_bf16: bool = False,
    unassigned_gpu: int | None = None,
) -> DeviceChoice:
    """Decide device, dtype and threads for one task.

    Args:
        requested: ``"auto"`` (the task's GPU, else a GPU of the node, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        precision: ``"auto"`` (on GPU bf16 where it has bf16 tensor cores, else fp16; exact fp32 on CPU),
            ``"fast"`` (as ``auto`` on GPU; on CPU bf16 where the CPU computes bf16 natively, else fp32: emulated
            bf16 is slower than fp32 and int8 costs too much quality to be a default, see docs/BENCHMARKS.md),
            ``"fp32"``, ``"fp16"`` (GPU), ``"bf16"`` (native only) or ``"int8"`` (CPU, opt-in).
        gpu_addresses: ``TaskContext.resources()["gpu"].addresses``; empty when Spark assigned none. With
            several, the first is used (one model copy per task; see README "GPU clusters").
        gpus: the CUDA devices this process sees (:func:`user_spark.runtime.gpu.cuda_devices`).
        visible_devices: ``CUDA_VISIBLE_DEVICES`` of this process.
        task_cpus: cores Spark gave the task (``spark.task.cpus``).
        threads: explicit torch thread count on CPU; default ``task_cpus``, so concurrent tasks on one
            executor do not oversubscribe its cores.
        cpu_bf16: the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX).
        unassigned_gpu: the ordinal to use when Spark assigned no GPU (the node registry's least used one);
            default 0.

    Returns:
        A :class:`DeviceChoice`.

    Raises:
        OptionError: for an unknown request or precision, a precision the device cannot run, CUDA asked for
            where there is none, or a GPU assigned by Spark that this process cannot see.

    >>> h100s = [GpuInfo(i, "H100", f"GPU-{i}", 80 << 30, (9, 0)) for i in range(2)]
    >>> choose_device(gpu_addresses=["1"], gpus=h100s, task_cpus=8)
    DeviceChoice(device='cuda:1', dtype='bfloat16', threads=None, cpus=8)
    >>> choose_device(task_cpus=2)
    DeviceChoice(device='cpu', dtype='float32', threads=2, cpus=2)
    """
    precision = check_precision(precision)
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be >= 1, got {threads}")
    req = check_device_request(requested)
    device = _pick_device(req, gpu_addresses, len(gpus), visible_devices, unassigned_gpu)
    cpus = max(1, task_cpus)
    if not device.startswith("cuda"):
        return DeviceChoice(device, _cpu_dtype(precision, cpu_bf16), threads or cpus, cpus)
    gpu = gpus[int(device.split(":", 1)[1])]
    return DeviceChoice(device, _gpu_dtype(precision, gpu), None, cpus)


def _pick_device(
    req: str, gpu_addresses: Sequence[str], count: int, visible_devices: str | None, unassigned: int | None
) -> str:
    """The torch device for a checked request (see :func:`choose_device`)."""
    if req == "cpu":
        return "cpu"
    if count == 0:
        if gpu_addresses:
            raise OptionError(
                f"Spark assigned GPU {list(gpu_addresses)} to this task, but torch in this Python worker sees no "
                "CUDA device. Install a CUDA build of torch on the executors and check the NVIDIA driver "
                "(nvidia-smi), or pass device='cpu' to embed on CPU knowingly."
            )
        if req == "auto":
            return "cpu"
        raise OptionError(
            f"device={req!r} but this executor sees no CUDA device; use device='auto' to fall back "
            "to CPU, or check the executor's GPU resources"
        )
    if req.startswith("cuda:"):
        ordinal = int(req.split(":", 1)[1])
        if ordinal >= count:
            raise OptionError(f"device={req!r}: this executor has {count} CUDA device(s)")
        return req
    if gpu_addresses:
        return f"cuda:{_cuda_ordinal(str(gpu_addresses[0]), visible_devices, count)}"
    return f"cuda:{unassigned if unassigned is not None and 0 <= unassigned < count else 0}"


def _cpu_dtype(precision: Precision, cpu_bf16: bool) -> str:
    if precision in ("auto", "fp32") or (precision == "fast" and not cpu_bf16):
        return "float32"
    if precision in ("fast", "bf16"):
        return "bfloat16"
    if precision == "int8":
        return "int8"
    raise OptionError("precision='fp16' needs a GPU; on CPU use 'fast' (bf16 or int8) or 'fp32' (exact)")


def _gpu_dtype(precision: Precision, gpu: GpuInfo) -> str:
    if precision in ("auto", "fast"):
        return "bfloat16" if gpu.native_bf16 else "float16"
    if precision == "int8":
        raise OptionError("precision='int8' is a CPU mode; on GPU use 'auto', 'fp16' or 'bf16'")
    if precision == "bf16" and not gpu.native_bf16:
        major, minor = gpu.capability
        raise OptionError(
            f"precision='bf16' needs bf16 tensor cores (compute capability 8.0 or later: A100, A10, L4, H100); "
            f"{gpu.device} is {gpu.name} ({major}.{minor}). Use precision='auto' (fp16 there) or 'fp32'."
        )
    return _DTYPES[precision]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX); without, bf16 is emulated and
    slower than fp32 (measured: 31 vs 142 GFLOP/s per core on an AVX-512 Xeon without BF16)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
