"""What the running Spark task tells the executor code: its partition, its GPU addresses, its cores.

The one place that reads pyspark's ``TaskContext``. Outside a Spark task (a plain Python caller, a test) and
where pyspark is not installed at all, :func:`current` says so with empty facts, and the rest of the executor
code path runs the same. ``bench/gpu_check.py`` replaces :func:`current` to play the tasks Spark would run on a
GPU machine that has no pyspark.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskFacts", "current"]


@dataclass(frozen=True)
class TaskFacts:
    """Attributes:
    partition: the task's partition id (``None`` outside a task).
    gpu_addresses: ``TaskContext.resources()["gpu"].addresses``; empty when Spark assigned no GPU.
    cpus: the task's cores (``spark.task.cpus``); ``None`` outside a task.
    """

    partition: int | None = None
    gpu_addresses: tuple[str, ...] = ()
    cpus: int | None = None


def current() -> TaskFacts:
    """The facts of the Spark task running in this thread, or empty ones outside a task (or without pyspark)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return TaskFacts()
    ctx = TaskContext.get()
    if ctx is None:
        return TaskFacts()
    gpu = ctx.resources().get("gpu")
    return TaskFacts(ctx.partitionId(), tuple(str(a) for a in gpu.addresses) if gpu is not None else (), ctx.cpus())
