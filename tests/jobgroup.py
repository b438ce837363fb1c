"""Count the Spark jobs an action starts: what "checked on the driver before any job" tests assert."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def jobs_started(spark, group: str = "user_spark_check") -> Iterator[list[int]]:
    """Run the block in a job group; the yielded list holds the group's job ids once the block ends."""
    sc = spark.sparkContext
    ids: list[int] = []
    sc.setJobGroup(group, "driver-side validation")
    try:
        yield ids
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        ids.extend(sc.statusTracker().getJobIdsForGroup(group))
