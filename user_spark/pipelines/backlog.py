"""What an enrichment run has to embed: found by keys only, staged once, cut into exact batches.

1. **Keys.** The input is read once as ``(id, content hash)``; one aggregation per id counts its distinct
   hashes (an id with two texts is refused) and a left anti-join with the output's ``(id, content_hash)``
   leaves the keys still missing. No text moves through these shuffles, only ids and 64-character hashes.
   The missing keys are staged (:class:`~user_spark.pipelines.staging.Staging`).
2. **Batches.** Each missing key gets a batch number from its place in the staged keys (partition offsets
   plus the row's index, :func:`batch_numbers`): every batch holds exactly ``batch_rows`` rows but the last,
   and none is empty, whatever was committed before a crash. ``batch_rows`` is ``commit_rows``, or more when
   the work would make more than :data:`MAX_BATCHES` batches, so a backfill writes a sane number of files.
3. **Rows.** The input's texts are joined to the missing keys (broadcast when the keys are few) and staged
   once, partitioned by batch: each batch then reads only its own folder, never the whole backlog again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from user_spark.embedding.columns import column
from user_spark.errors import ColumnError
from user_spark.pipelines.frames import one_row

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from user_spark.pipelines.staging import Staging

__all__ = ["BATCH", "HASH_COL", "MAX_BATCHES", "Backlog", "batch_numbers", "content_hash", "find_backlog"]

logger = logging.getLogger(__name__)

HASH_COL = "content_hash"
BATCH = "_batch"
#: A run cuts its work into at most this many batches; more work makes bigger batches.
MAX_BATCHES = 100
_N = "_n"


def content_hash(columns: list[str]) -> Column:
    """SHA-256 (hex) of the text columns' values, by column name (their order does not matter).

    Each column is hashed on its own first (null and empty text differ), then the column names and their
    hashes: no text can imitate the boundary between two columns.
    """
    from pyspark.sql import functions as F

    parts = []
    for name in sorted(columns):
        text = F.sha2(F.coalesce(F.concat(F.lit("s"), column(name)), F.lit("n")), 256)
        parts.append(F.concat(F.lit(f"{len(name)}:{name}="), text))
    return F.sha2(F.concat_ws(",", *parts), 256)


@dataclass(frozen=True)
class Backlog:
    """The staged rows to embed: ``rows`` of them in ``batches`` batches of ``batch_rows`` (the last may be
    smaller). ``frame(i)`` reads batch ``i`` alone."""

    rows: int
    batches: int
    batch_rows: int
    path: str | None
    staged: DataFrame | None

    def frame(self, i: int) -> DataFrame:
        from pyspark.sql import functions as F

        assert self.staged is not None
        return self.staged.where(F.col(BATCH) == i).drop(BATCH)


def _missing_keys(df: DataFrame, existing: DataFrame | None, id_col: str, text_cols: list[str]) -> DataFrame:
    """``(id, content_hash, _n)`` of the input's ids that the output lacks; ``_n`` counts the id's distinct
    texts (ids with two, and null ids, are always kept, for the check)."""
    from pyspark.sql import functions as F

    keys = df.select(column(id_col).alias(id_col), content_hash(text_cols).alias(HASH_COL))
    per_id = keys.groupBy(column(id_col)).agg(F.countDistinct(HASH_COL).alias(_N), F.min(HASH_COL).alias(HASH_COL))
    if existing is None:
        return per_id
    done = existing.select(column(id_col).alias(id_col), HASH_COL).withColumn(_N, F.lit(1).cast("long"))
    return per_id.join(done, [id_col, HASH_COL, _N], "left_anti")


def _check_keys(keys: DataFrame, id_col: str) -> int:
    """Refuse null ids and ids with two texts; return the count of keys (one small job over staged keys)."""
    from pyspark.sql import functions as F

    stats = one_row(keys.agg(F.count(F.lit(1)).alias("rows"), F.max(_N).alias("most"),
                             F.count(F.when(column(id_col).isNull(), 1)).alias("null_ids")))
    if stats["null_ids"]:
        raise ColumnError(f"Id column {id_col!r} has null values; every row needs an id")
    if stats["most"] and stats["most"] > 1:
        shown = [r[0] for r in keys.where(F.col(_N) > 1).orderBy(column(id_col)).limit(3).collect()]
        raise ColumnError(
            f"Ids {shown} appear with different texts in the input; an id must name one row. Deduplicate the "
            "input (e.g. keep the newest row per id) before enriching."
        )
    return int(stats["rows"])


def batch_numbers(keys: DataFrame, batch_rows: int) -> DataFrame:
    """``keys`` with :data:`BATCH`: row ``r`` of the frame (counted partition by partition) goes to batch
    ``r // batch_rows``. ``keys`` must read the same rows in the same partitions every time (staged files).

    One small job counts the rows of each partition; ``monotonically_increasing_id`` holds the partition in
    its upper 31 bits and the row's index in it in the lower 33.
    """
    from pyspark.sql import functions as F

    pid = F.spark_partition_id()
    counts: dict[int, int] = {int(r[0]): int(r[1]) for r in keys.groupBy(pid.alias("p")).count().collect()}
    offsets, total = [], 0
    for p in range(max(counts, default=-1) + 1):
        offsets.append(total)
        total += counts.get(p, 0)
    index = F.element_at(F.array(*[F.lit(o).cast("long") for o in offsets or [0]]), pid + 1) + (
        F.monotonically_increasing_id() - F.shiftleft(pid.cast("long"), 33))
    return keys.withColumn(BATCH, F.floor(index / F.lit(batch_rows)).cast("int"))


def find_backlog(df: DataFrame, existing: DataFrame | None, *, id_col: str, text_cols: list[str],
                 commit_rows: int, staging: Staging) -> Backlog:
    """Find, check and stage the rows of ``df`` that ``existing`` lacks (see the module docstring).

    Raises:
        ColumnError: null ids, or an id with two different texts anywhere in the input.
    """
    from pyspark.sql import functions as F

    keys = staging.stage(_missing_keys(df, existing, id_col, text_cols), "missing-keys")
    todo = _check_keys(keys, id_col)
    if todo == 0:
        staging.drop("missing-keys")
        return Backlog(0, 0, commit_rows, None, None)
    batch_rows = max(commit_rows, math.ceil(todo / MAX_BATCHES))
    batches = math.ceil(todo / batch_rows)
    numbered = keys.select(column(id_col), HASH_COL).withColumn(BATCH, F.lit(0)) if batches == 1 else batch_numbers(
        keys.select(column(id_col), HASH_COL), batch_rows)
    texts = df.select(column(id_col).alias(id_col), *[column(c).alias(c) for c in text_cols])
    if todo <= 1_000_000:  # a million keys: ~100 MB, sent to every task rather than shuffling the input
        numbered = F.broadcast(numbered)
    rows = texts.join(numbered, id_col).dropDuplicates([id_col])  # exact duplicate input rows count once
    staged = staging.stage(rows, "missing-rows", partition_by=BATCH)
    staging.drop("missing-keys")
    logger.info("%d rows to embed in %d batch(es) of %d", todo, batches, batch_rows)
    return Backlog(todo, batches, batch_rows, staging.path, staged)
