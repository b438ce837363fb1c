"""Which GPU a Python worker uses when Spark assigned none, and how many workers share each GPU of the node.

Spark hands GPU addresses to tasks, not to Python workers, and gives an idle worker to any task; the worker cache
(:mod:`user_spark.runtime.worker`) follows the task's address. When Spark assigned no GPU (``local[*]`` on a
multi-GPU workstation, a single-node Databricks GPU cluster, a stage that asked for none) every worker would
otherwise take ``cuda:0``: N model copies and contexts on one GPU, the others idle. Instead each worker claims the
least used GPU of the node and keeps it for its life.

The claims live in a node-local registry, a directory of lock files ``<gpu uuid>.<slot>``: a worker holds an
exclusive ``flock`` on one file while it keeps a model on that GPU. Counting the locked files of a GPU says how many
workers share it (the token budget divides its free memory among them). The kernel drops a lock when its process
exits, however it exits, so a killed worker never leaves a GPU marked busy. Every executor and application of
the user on the node shares the directory (``$TMPDIR/user_spark-gpus-<uid>``; ``USER_SPARK_GPU_REGISTRY``
overrides it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from user_spark.runtime.gpu import GpuInfo

try:
    import fcntl

    _FLOCK = True
except ImportError:  # not POSIX: no registry; every GPU counts one worker, and spreading falls back to the pid
    _FLOCK = False

__all__ = ["ENV_REGISTRY", "GpuClaim", "GpuRegistry", "least_used"]

logger = logging.getLogger(__name__)

ENV_REGISTRY = "USER_SPARK_GPU_REGISTRY"


def least_used(holders: Sequence[int]) -> int:
    """Index of the GPU with the fewest workers; ties go to the lowest index.

    >>> least_used([2, 1, 1])
    1
    """
    if not holders:
        raise ValueError("no GPUs to choose from")
    return min(range(len(holders)), key=lambda i: (holders[i], i))


@dataclass
class GpuClaim:
    """This worker's slot on one GPU; :meth:`release` (or process exit) frees it."""

    gpu: GpuInfo
    path: str
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _safe(uuid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in uuid)


class GpuRegistry:
    """The node's GPU claims (see the module docstring). Safe to use from several processes at once."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or os.environ.get(ENV_REGISTRY) or os.path.join(
            tempfile.gettempdir(), f"user_spark-gpus-{os.getuid() if hasattr(os, 'getuid') else 0}"
        )

    def _slots(self, gpu: GpuInfo) -> list[str]:
        prefix = _safe(gpu.uuid) + "."
        try:
            names = os.listdir(self.directory)
        except OSError:  # not there yet, or unusable (see claim)
            return []
        slots = [n for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]
        return [os.path.join(self.directory, n) for n in sorted(slots, key=lambda n: int(n[len(prefix) :]))]

    def holders(self, gpu: GpuInfo) -> int:
        """Workers holding a slot on ``gpu`` now (this one included, if it holds one)."""
        if not _FLOCK:
            return 1
        count = 0
        for path in self._slots(gpu):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1
            finally:
                os.close(fd)  # also drops the shared lock, if we got it
        return count

    def claim(self, gpu: GpuInfo) -> GpuClaim:
        """A slot on ``gpu``: the lowest-numbered free one, created if all are held.

        Without a usable registry (no ``flock``, a read-only temporary directory) the claim is not held: the worker
        still runs on ``gpu``, it is just not counted.
        """
        if not _FLOCK:
            return GpuClaim(gpu, "")
        try:
            return self._claim(gpu)
        except OSError as exc:
            logger.warning("GPU registry %s unusable (%s); not counting workers per GPU", self.directory, exc)
            return GpuClaim(gpu, "")

    def _claim(self, gpu: GpuInfo) -> GpuClaim:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        slot = 0
        while True:
            path = os.path.join(self.directory, f"{_safe(gpu.uuid)}.{slot}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                slot += 1
                continue
            return GpuClaim(gpu, path, fd)

    def claim_least_used(self, gpus: Sequence[GpuInfo]) -> GpuClaim:
        """A slot on whichever of ``gpus`` has the fewest workers now (counted and claimed atomically)."""
        if not _FLOCK:
            return GpuClaim(gpus[os.getpid() % len(gpus)], "")
        try:
            with self._exclusive():
                return self._claim(gpus[least_used([self.holders(g) for g in gpus])])
        except OSError as exc:
            logger.warning("GPU registry %s unusable (%s); spreading workers by process id", self.directory, exc)
            return GpuClaim(gpus[os.getpid() % len(gpus)], "")

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The registry's own lock, so two workers starting at once do not both pick the same idle GPU."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, "registry.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
