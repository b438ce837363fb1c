"""Executor-side state: this Python worker's device, its GPU claim and the encoders loaded on it.

Spark pickles a UDF's closure and unpickles it for every task, but a module is imported once per Python
worker process, so state kept here outlives tasks and batches. This is how ``pyspark.ml.model_cache`` and
mlflow's ``SparkModelCache`` keep one model per worker. It relies on ``spark.python.worker.reuse`` (on by
default): with reuse off, every task starts a fresh worker and loads the model again.

Placement, one device per worker at a time:

- **Spark assigned the task a GPU**: the worker uses it. Spark hands an idle worker to any task, so a worker of
  an executor with several GPUs is sometimes handed a task for another GPU; it then *releases* every encoder it
  holds (the memory goes back to the driver, checked) before loading on the new GPU, so it never holds a model
  on two GPUs. (Its CUDA context on the old GPU stays until the worker exits; see README "GPU clusters".)
- **Spark assigned none and the worker sees GPUs** (``local[*]`` on a multi-GPU machine, a single-node GPU
  cluster): the worker claims the node's least used GPU (:mod:`user_spark.runtime.placement`) and keeps it,
  so workers spread over the GPUs instead of piling onto ``cuda:0``; it says so once in its log.
- Several models may live on the worker's device at once (a notebook trying models), at most ``_MODELS``;
  the least recently used is released beyond that.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from user_spark.runtime import gpu
from user_spark.runtime.placement import GpuClaim, GpuRegistry
from user_spark.runtime.task import TaskFacts

if TYPE_CHECKING:
    from user_spark.model.spec import ModelSpec
    from user_spark.runtime.device import DeviceChoice
    from user_spark.runtime.encoder import Encoder
    from user_spark.runtime.settings import DeviceRequest, Precision

__all__ = [
    "PlacementEvent",
    "events",
    "get_encoder",
    "gpu_sharers",
    "load_events",
    "place",
    "release_all",
    "reset",
]

logger = logging.getLogger(__name__)

_MODELS = 3
_lock = threading.RLock()
_device: str | None = None
_claim: GpuClaim | None = None
_encoders: OrderedDict[Hashable, Encoder] = OrderedDict()
_events: list[PlacementEvent] = []
_said: set[str] = set()


@dataclass(frozen=True)
class PlacementEvent:
    """Something this worker did with a model or a GPU.

    Attributes:
        pid: the worker process. action: ``"load"``, ``"release"`` or ``"claim"`` (a GPU slot in the registry).
        model: the model's name (``""`` for a claim). device: ``"cpu"`` or ``"cuda:N"``.
        seconds: how long a load took. collected: after a release, whether the model object is gone (nothing
        kept it alive). left_bytes: after a release, CUDA memory this process still holds on that device.
    """

    pid: int
    action: str
    model: str
    device: str
    seconds: float = 0.0
    collected: bool | None = None
    left_bytes: int | None = None


def _say_once(key: str, level: int, message: str, *args: object) -> None:
    if key not in _said:
        _said.add(key)
        logger.log(level, message, *args)


@functools.lru_cache(maxsize=1)
def _cpu_bf16() -> bool:
    from user_spark.runtime.device import cpu_has_native_bf16

    return cpu_has_native_bf16()


def place(requested: DeviceRequest, precision: Precision, threads: int | None, facts: TaskFacts) -> DeviceChoice:
    """The device, dtype and threads this worker runs the task with; claims its GPU in the node registry.

    Raises:
        OptionError: see :func:`~user_spark.runtime.device.choose_device`.
    """
    import torch

    from user_spark.runtime.device import choose_device

    gpus = gpu.cuda_devices()
    with _lock:
        unassigned = None
        if gpus and not facts.gpu_addresses and requested in ("auto", "cuda"):
            unassigned = _unassigned_gpu(gpus).ordinal
        choice = choose_device(
            requested=requested, precision=precision, gpu_addresses=facts.gpu_addresses, gpus=gpus,
            visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), task_cpus=facts.cpus or torch.get_num_threads(),
            threads=threads, cpu_bf16=_cpu_bf16(), unassigned_gpu=unassigned,
        )
        if len(facts.gpu_addresses) > 1 and choice.is_cuda:
            _say_once("several", logging.WARNING,
                      "Spark assigned %d GPUs %s to one task; user_spark runs one model copy per task, on %s. Set "
                      "spark.task.resource.gpu.amount=1 (or less) to give every GPU its own task.",
                      len(facts.gpu_addresses), list(facts.gpu_addresses), choice.device)
        _hold(choice, gpus)
    return choice


def _unassigned_gpu(gpus: tuple[gpu.GpuInfo, ...]) -> gpu.GpuInfo:
    """The GPU this worker keeps when Spark assigns none: its current claim, else the node's least used one."""
    global _claim
    if _claim is not None and _claim.gpu in gpus:
        return _claim.gpu
    if _claim is not None:
        _claim.release()
    _claim = GpuRegistry().claim_least_used(gpus)
    _events.append(PlacementEvent(os.getpid(), "claim", "", _claim.gpu.device))
    _say_once("unassigned", logging.WARNING,
              "Spark assigned no GPU to this task; Python worker %d uses %s, the least used of the %d GPUs this "
              "process sees. Set spark.task.resource.gpu.amount for Spark to schedule GPUs, or device='cpu'.",
              os.getpid(), _claim.gpu.device, len(gpus))
    return _claim.gpu


def _hold(choice: DeviceChoice, gpus: tuple[gpu.GpuInfo, ...]) -> None:
    """Keep this worker's registry claim on the GPU it runs on (none on CPU)."""
    global _claim
    if not choice.is_cuda:
        if _claim is not None:
            _claim.release()
            _claim = None
        return
    target = gpus[int(choice.device.split(":", 1)[1])]
    if _claim is not None and _claim.gpu == target:
        return
    if _claim is not None:
        _claim.release()
    _claim = GpuRegistry().claim(target)
    _events.append(PlacementEvent(os.getpid(), "claim", "", target.device))


def gpu_sharers() -> int:
    """Workers of this node that hold a model on this worker's GPU now (1 on CPU)."""
    with _lock:
        claim = _claim
    return max(1, GpuRegistry().holders(claim.gpu)) if claim is not None and claim.held else 1


def get_encoder(
    key: Hashable, spec: ModelSpec, model_dir: str, choice: DeviceChoice, name: str, backend: str = "auto"
) -> Encoder:
    """The cached encoder for ``key`` on ``choice``'s device, loading it on first use in this process.

    A task on another device than the worker's current one first releases every encoder the worker holds.
    """
    global _device
    full_key = (key, choice.dtype, backend)
    with _lock:
        if _device is not None and choice.device != _device and _encoders:
            logger.info("Python worker %d moves from %s to %s: releasing %d model(s) first", os.getpid(), _device,
                        choice.device, len(_encoders))
            release_all()
        _device = choice.device
        encoder = _encoders.get(full_key)
        if encoder is not None:
            _encoders.move_to_end(full_key)
            return encoder
        while len(_encoders) >= _MODELS:
            _release(*_encoders.popitem(last=False))
        from user_spark.runtime.encoder import Encoder

        start = time.perf_counter()
        encoder = Encoder(spec, model_dir, choice, name=name, backend=backend)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        _events.append(PlacementEvent(os.getpid(), "load", name, choice.device, seconds))
        logger.info("Loaded %s on %s (%s, %s) in %.1f s, pid %d", name, choice.device, choice.dtype,
                    encoder.backend, seconds, os.getpid())
        _encoders[full_key] = encoder
        return encoder


def _release(_key: Hashable, encoder: Encoder) -> None:
    """Drop ``encoder`` and return its device memory; record whether it really went."""
    device, name = encoder.choice.device, encoder.name
    model_ref = weakref.ref(encoder.model) if encoder.model is not None else None
    encoder.close()
    del encoder
    left = gpu.release_memory(device)
    collected = model_ref is None or model_ref() is None
    _events.append(PlacementEvent(os.getpid(), "release", name, device, collected=collected, left_bytes=left))
    if not collected:
        logger.warning("Released %s on %s, but something still references the model; its memory stays", name, device)


def release_all() -> None:
    """Release every encoder of this worker (memory returned to the device)."""
    with _lock:
        while _encoders:
            _release(*_encoders.popitem(last=False))


def events() -> list[PlacementEvent]:
    """Every load, release and GPU claim of this process so far, in order."""
    with _lock:
        return list(_events)


def load_events() -> list[tuple[int, str, str, float]]:
    """Every model load of this process so far: ``(pid, model, device, seconds)``."""
    return [(e.pid, e.model, e.device, e.seconds) for e in events() if e.action == "load"]


def reset() -> None:
    """Forget this process's placement: release its encoders and GPU claim, clear its events (tests and
    ``bench/gpu_check.py`` play several workers, one after another, in one process)."""
    global _claim, _device
    with _lock:
        release_all()
        if _claim is not None:
            _claim.release()
        _claim, _device = None, None
        _events.clear()
        _said.clear()
