"""Executor-side state: the loaded encoders of this Python worker process.

Spark pickles a UDF's closure and unpickles it for every task, but a module is imported once per Python
worker process, so state kept here outlives tasks and batches. This is how ``pyspark.ml.model_cache`` and
mlflow's ``SparkModelCache`` keep one model per worker. It relies on ``spark.python.worker.reuse`` (on by
default): with reuse off, every task starts a fresh worker and loads the model again.

Encoders are keyed by model, device and dtype; the least recently used is dropped beyond a few models, so a
notebook that tries several models does not pile them up in executor (or GPU) memory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from user_spark.model.spec import ModelSpec
    from user_spark.runtime.device import DeviceChoice
    from user_spark.runtime.encoder import Encoder

__all__ = ["get_encoder", "load_events"]

logger = logging.getLogger(__name__)

_CAPACITY = 3
_lock = threading.Lock()
_encoders: OrderedDict[Hashable, Encoder] = OrderedDict()
_loads: list[tuple[int, str, str, float]] = []  # (pid, model, device, seconds)


def get_encoder(
    key: Hashable, spec: ModelSpec, model_dir: str, choice: DeviceChoice, name: str, backend: str = "auto"
) -> Encoder:
    """The cached encoder for ``key`` on ``choice``'s device, loading it on first use in this process."""
    full_key = (key, choice.device, choice.dtype, backend)
    with _lock:
        encoder = _encoders.get(full_key)
        if encoder is not None:
            _encoders.move_to_end(full_key)
            return encoder
        from user_spark.runtime.encoder import Encoder

        start = time.perf_counter()
        encoder = Encoder(spec, model_dir, choice, name=name, backend=backend)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        _loads.append((os.getpid(), name, choice.device, seconds))
        logger.info("Loaded %s on %s (%s, %s) in %.1f s, pid %d", name, choice.device, choice.dtype,
                    encoder.backend, seconds, os.getpid())
        _encoders[full_key] = encoder
        while len(_encoders) > _CAPACITY:
            _encoders.popitem(last=False)
        return encoder


def load_events() -> list[tuple[int, str, str, float]]:
    """Every model load of this process so far: ``(pid, model, device, seconds)``."""
    with _lock:
        return list(_loads)
