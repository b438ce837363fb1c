"""Test-only fault injection on the executor path; does nothing unless ``USER_SPARK_TEST_FAULT`` is set.

The fault tests kill a Python worker or a whole executor in the middle of an embedding job and check that
Spark's retry gives complete, identical output. They set ``USER_SPARK_TEST_FAULT=<dir>`` on the executors
(``spark.executorEnv.USER_SPARK_TEST_FAULT``) and arm a fault by creating ``<dir>/kill-worker`` or
``<dir>/kill-executor``, optionally holding a partition number. The first batch of that partition (of any
partition, if the file is empty) to rename the file to ``<name>.fired`` wins; the rename makes the fault
one-shot across processes, so the retried task runs undisturbed. The winner writes who it was into the
``.fired`` file and then ``kill-worker`` ends its Python worker (``os._exit(1)``), ``kill-executor`` SIGKILLs
the executor JVM above it.

The enrichment job's driver calls :func:`after_commit` after each committed batch: ``<dir>/arm-after-commit``
holding ``N`` arms ``kill-executor`` once ``N`` batches are committed, so the next batch dies mid-write (on local
Spark the executor JVM is the driver's: a killed driver).
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "after_commit", "maybe_inject_fault"]

ENV = "USER_SPARK_TEST_FAULT"
_ACTIONS = ("kill-worker", "kill-executor")


def _executor_jvm_pid() -> int | None:
    """The nearest ``java`` process above this one (Linux /proc); the Python daemon sits in between."""
    pid = os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() == "java":
                    return pid
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
    return None


def maybe_inject_fault(partition: int | None) -> None:
    """Kill this worker or executor if a fault is armed for ``partition`` (see the module docstring)."""
    root = os.environ.get(ENV)
    if not root:
        return
    for action in _ACTIONS:
        armed = os.path.join(root, action)
        try:
            with open(armed) as fh:
                target = fh.read().strip()
        except OSError:
            continue
        if target and str(partition) != target:
            continue
        try:
            os.rename(armed, armed + ".fired")
        except OSError:  # another process won
            continue
        victim = os.getpid() if action == "kill-worker" else _executor_jvm_pid()
        with open(armed + ".fired", "w") as fh:
            fh.write(f"pid={os.getpid()} partition={partition} victim={victim}\n")
        if action == "kill-worker":
            os._exit(1)
        if victim is not None:
            os.kill(victim, signal.SIGKILL)


def after_commit(commits: int) -> None:
    """Driver side: arm ``kill-executor`` once ``commits`` batches are committed (see the module docstring)."""
    root = os.environ.get(ENV)
    if not root:
        return
    trigger = os.path.join(root, "arm-after-commit")
    try:
        with open(trigger) as fh:
            wanted = int(fh.read().strip())
    except (OSError, ValueError):
        return
    if commits >= wanted:
        os.rename(trigger, trigger + ".fired")
        open(os.path.join(root, "kill-executor"), "w").close()
