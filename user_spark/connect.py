"""Classic Spark and Spark Connect: how user_spark tells the two sessions apart and what it does differently.

A Spark Connect session (``SparkSession.builder.remote(...)``, Databricks shared clusters and serverless
notebooks) is a client of a server: there is no ``SparkContext`` here, so no accumulators, ``addFile``/
``addArchive`` or ``df.rdd``. DataFrames, pandas / Arrow UDFs, ``localCheckpoint`` and Spark ML's built-in
estimators work the same, so only the few places that touched the SparkContext need another way:

- shipping a model folder: ``SparkSession.addArtifacts(archive=True)``, one copy per Connect session;
- caching what was shipped: by Connect session id (artifacts belong to one session), not application id;
- whether executors share the driver's disk: only for the server pyspark starts inside this process
  (``remote("local[N]")``); any ``sc://`` server may be another machine;
- partition counts: unknown to a Connect client.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "default_parallelism",
    "is_connect",
    "is_local_master",
    "num_partitions",
    "session_key",
    "shares_driver_disk",
]


def is_connect(spark: SparkSession) -> bool:
    """True for a ``pyspark.sql.connect`` session (also Databricks Connect's, a subclass of it).

    The session's class decides, not ``pyspark.sql.utils.is_remote()``: that reads process-wide environment
    variables, which say nothing about the session a caller passes in.
    """
    return type(spark).__module__.startswith("pyspark.sql.connect")


def session_key(spark: SparkSession) -> str:
    """What identifies the session's executors' view of shipped files: the application, or the Connect session."""
    if is_connect(spark):
        return f"connect:{spark.session_id}"  # type: ignore[attr-defined]
    return spark.sparkContext.applicationId


def is_local_master(master: str | None) -> bool:
    """True for ``local``, ``local[N]``, ``local[*]``, ``local[N,F]``: executors share the driver's disk."""
    return bool(master) and (master == "local" or master.startswith("local["))  # type: ignore[union-attr]


def _master(spark: SparkSession) -> str | None:
    """``spark.master``, or ``None`` where a Connect server does not show it (Databricks serverless)."""
    try:
        return spark.conf.get("spark.master", None)
    except Exception:  # the server may refuse to show the conf; None means "assume a cluster"
        return None


def shares_driver_disk(spark: SparkSession) -> bool:
    """Whether the executors read the files of this Python process's machine.

    Classic: a ``local`` master. Connect: only when pyspark started the server inside this process
    (``SparkSession.builder.remote("local[N]")`` sets ``SPARK_LOCAL_REMOTE``) and its master is local. An
    ``sc://`` URL, even ``sc://localhost`` (an SSH tunnel?), may lead to another machine, so it counts as not
    sharing: shipping then costs a copy, while guessing wrong would fail on every executor.
    """
    if is_connect(spark) and "SPARK_LOCAL_REMOTE" not in os.environ:
        return False
    return is_local_master(_master(spark))


def default_parallelism(spark: SparkSession) -> int | None:
    """``SparkContext.defaultParallelism``; over Connect ``spark.default.parallelism`` if set, else ``None``."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    try:
        value = spark.conf.get("spark.default.parallelism", None)
    except Exception:  # not shown by this server
        return None
    return int(value) if value else None


def num_partitions(df: DataFrame) -> int | None:
    """The DataFrame's partition count, or ``None`` over Connect (a client cannot see it without a job)."""
    if is_connect(df.sparkSession):
        return None
    return df.rdd.getNumPartitions()
