"""Small helpers on Spark DataFrames that the jobs share."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

__all__ = ["one_row", "shuffle_partitions_setting"]


def one_row(df: DataFrame) -> Row:
    """The single row of an aggregate (``df.agg(...)`` always has one)."""
    row = df.first()
    if row is None:  # pragma: no cover - an aggregate without grouping returns one row, even over no input
        raise RuntimeError("an aggregate returned no row")
    return row


def shuffle_partitions_setting(spark: SparkSession) -> int:
    """``spark.sql.shuffle.partitions`` as a number; where it is ``auto`` (Databricks) or unset, the cluster's
    default parallelism (200 where even that is unknown, as over some Spark Connect servers)."""
    from user_spark.connect import default_parallelism

    value = spark.conf.get("spark.sql.shuffle.partitions", None)
    try:
        return max(1, int(value or ""))
    except ValueError:
        return default_parallelism(spark) or 200
