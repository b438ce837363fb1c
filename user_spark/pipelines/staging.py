"""Durable intermediates: what a job must not lose is staged as Parquet under a working directory.

A ``localCheckpoint`` keeps its blocks on the executors that computed them: when one of them is lost (a spot
node reclaimed, autoscaling down), every job that reads the checkpoint fails, and the embeddings behind it
(hours of GPU) are gone. :class:`Staging` writes such intermediates as Parquet under a folder of the
cluster's filesystem instead and reads them back, so a lost executor costs only the tasks it was running.

Where staging goes (:func:`staging_root`): ``checkpoint_dir=`` (``--checkpoint-dir``), else the session's
``spark.checkpoint.dir`` (or ``SparkContext.setCheckpointDir``), else a folder next to the job's output
(``<parent>/_user_spark_staging``), else, on a local master, the machine's temp folder. Each call stages
into its own run folder below it, deleted by :meth:`Staging.close` (the CLI closes after writing the
output; a library call's folder is deleted when the result is closed, or when the Python process exits).
Nothing durable is possible without a shared folder: on a cluster without any of these, intermediates fall
back to ``localCheckpoint`` with a warning.

``localCheckpoint`` stays where a lost block is cheap to recompute from durable inputs, and says so where it
is called (:meth:`Staging.local`).

Over Spark Connect the client writes and reads the same Parquet through the server. It cannot delete a
folder on the cluster's filesystem (there is no API for it): it deletes run folders it can see on its own
disk (a local server), and otherwise logs the folder to delete (or give ``checkpoint_dir`` a lifecycle rule).
``localCheckpoint`` frames over Connect (a cached relation on the server) are released by an ``atexit`` hook
while gRPC still works: pyspark releases them in ``CachedRemoteRelation.__del__``, which, run during
interpreter shutdown, never returns, so a script that used one hung at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import tempfile
import threading
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from user_spark.connect import is_connect, shares_driver_disk

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["Staging", "local_checkpoint", "open_staging", "staging", "staging_root"]

logger = logging.getLogger(__name__)

STAGING_FOLDER = "_user_spark_staging"

_open: dict[int, Staging] = {}
_lock = threading.Lock()


def _conf(spark: SparkSession, key: str) -> str | None:
    try:
        return spark.conf.get(key, None) or None
    except Exception:  # a Connect server may refuse to show a conf
        return None


def staging_root(spark: SparkSession, checkpoint_dir: str | None = None, output: str | None = None) -> str | None:
    """Where a job stages durable intermediates, or ``None`` if nowhere shared is known (see the module doc)."""
    if checkpoint_dir:
        return checkpoint_dir.rstrip("/")
    configured = _conf(spark, "spark.checkpoint.dir")
    if not configured and not is_connect(spark):
        configured = spark.sparkContext.getCheckpointDir()
    if configured:
        return f"{configured.rstrip('/')}/{STAGING_FOLDER}"
    if output:
        parent = output.rstrip("/").rsplit("/", 1)[0] if "/" in output.rstrip("/") else "."
        return f"{parent}/{STAGING_FOLDER}"
    if shares_driver_disk(spark):
        return os.path.join(tempfile.gettempdir(), STAGING_FOLDER)
    return None


class Staging:
    """A job's run folder for durable intermediates (see the module docstring).

    Use it as a context manager, or call :meth:`close`; folders still open when Python exits are deleted then.

    >>> with staging(spark, "/lake/tmp") as st:                     # doctest: +SKIP
    ...     pairs = similarity_join(q, p, ..., checkpoint_dir=st)   # embeddings staged under /lake/tmp/...
    ...     pairs.write.parquet("/lake/pairs")
    # the run folder is deleted here
    """

    def __init__(self, spark: SparkSession, root: str | None, *, job: str = "job") -> None:
        self.spark = spark
        stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        self.path = None if root is None else f"{root}/{job}-{stamp}"
        self.closed = False
        self._names: set[str] = set()
        self._used = False
        with _lock:
            _open[id(self)] = self
        if root is None:
            logger.warning(
                "No folder for durable intermediates: set checkpoint_dir= (--checkpoint-dir) or "
                "spark.checkpoint.dir to a folder every executor reads. Intermediates are local checkpoints, "
                "and a lost executor fails the job."
            )

    @property
    def durable(self) -> bool:
        """Whether :meth:`stage` writes files (``False``: it falls back to ``localCheckpoint``)."""
        return self.path is not None

    def stage(self, df: DataFrame, name: str, *, partition_by: str | None = None) -> DataFrame:
        """Write ``df`` once, as Parquet under the run folder, and return a frame reading it back.

        The write runs ``df``'s plan once; the returned frame's lineage starts at the files, so later jobs
        (and retried tasks, after a lost executor) read them instead of computing ``df`` again. With
        ``partition_by``, a filter on that column reads only its folders.
        """
        if self.closed:
            raise RuntimeError(f"staging folder {self.path} is closed")
        if self.path is None:
            return self.local(df)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        taken, n = name, 1
        while name in self._names:  # two intermediates of one name (a join whose sides share a column name)
            n += 1
            name = f"{taken}-{n}"
        self._names.add(name)
        self._used = True
        target = f"{self.path}/{name}"
        writer = df.write.mode("error")
        if partition_by is not None:
            writer = writer.partitionBy(partition_by)
        writer.parquet(target)
        logger.info("staged %s at %s", name, target)
        return self.spark.read.parquet(target)

    def local(self, df: DataFrame) -> DataFrame:
        """:func:`local_checkpoint`, for what is cheap to recompute (or where nothing durable exists)."""
        return local_checkpoint(df)

    def drop(self, name: str) -> None:
        """Delete one staged intermediate that nothing reads any more."""
        if self.path is not None and name in self._names:
            self._names.discard(name)
            self._delete(f"{self.path}/{name}")

    def close(self) -> None:
        """Delete the run folder and everything staged in it (frames reading it fail afterwards)."""
        if self.closed:
            return
        self.closed = True
        with _lock:
            _open.pop(id(self), None)
        if self.path is not None and self._used:
            self._delete(self.path)

    def _delete(self, path: str) -> None:
        from user_spark.pipelines.files import LocalFiles, files, local_path

        try:
            fs = files(self.spark, path)
            if fs is None:
                logger.warning("staged intermediates at %s cannot be deleted from a Spark Connect client on another "
                               "machine; delete the folder, or give checkpoint_dir a lifecycle rule", path)
                return
            fs.delete(path)
        except Exception as exc:  # a stopped session (at exit): a local folder can still go
            if local_path(path) is not None:
                LocalFiles().delete(path)
                return
            logger.warning("could not delete staged intermediates at %s (%s); delete the folder", path, exc)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Staging({self.path or 'local checkpoints'!r}, {state})"


def staging(spark: SparkSession, checkpoint_dir: str | None = None, *, output: str | None = None,
            job: str = "user_spark") -> Staging:
    """A :class:`Staging` run folder under :func:`staging_root`; pass it to a job as ``checkpoint_dir=`` to
    decide when its intermediates are deleted (at the end of a ``with`` block)."""
    return Staging(spark, staging_root(spark, checkpoint_dir, output), job=job)


def open_staging(spark: SparkSession, checkpoint_dir: str | Staging | None, *, job: str,
                 output: str | None = None) -> tuple[Staging, bool]:
    """The job's staging and whether the job owns it (``False`` when the caller passed a :class:`Staging`)."""
    if isinstance(checkpoint_dir, Staging):
        return checkpoint_dir, False
    return staging(spark, checkpoint_dir, output=output, job=job), True


def local_checkpoint(df: DataFrame) -> DataFrame:
    """``df.localCheckpoint(eager=True)``: lineage cut, blocks kept by the executors (lost with one of them).

    Over Spark Connect the checkpoint is released at exit (see the module docstring).
    """
    return df.localCheckpoint(eager=True)


def _release_checkpoints() -> None:
    """Release every Spark Connect checkpoint still alive (user_spark's and the caller's alike: at exit pyspark
    would try the same and hang)."""
    import sys

    if "pyspark.sql.connect.plan" not in sys.modules:
        return
    import gc

    from pyspark.sql.connect.plan import CachedRemoteRelation

    for plan in [obj for obj in gc.get_objects() if isinstance(obj, CachedRemoteRelation)]:
        if getattr(plan, "_relation_id", None) is None:
            continue
        with contextlib.suppress(Exception):  # the server is gone: nothing to release
            plan.__del__()
        plan._relation_id = None  # type: ignore[assignment]  # pyspark's own __del__ then does nothing


def _close_all() -> None:
    with _lock:
        still_open = list(_open.values())
    for st in still_open:
        st.close()


# atexit runs handlers last-registered first: pyspark's Connect client registers its own when a session is
# built (before any job here), so these run before it.
atexit.register(_close_all)
atexit.register(_release_checkpoints)
