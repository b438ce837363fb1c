"""Blocked similarity on Spark: pairs above a threshold inside buckets (top-k joins:
:mod:`user_spark.pipelines.knn`).

It works on frames of ``(_id, _vec, _bucket)`` rows. A bucket holding more than ``block_rows`` rows on a side
is cut into sub-blocks by a hash of the id; every (left sub-block, right sub-block) pair of a bucket is one
block, so a block holds at most about ``2 x block_rows`` vectors and its GEMM runs in chunks
(:mod:`user_spark.ops.blocks`). Rows are copied once per sub-block of the other side, never once per row: there
is no exploded N x M frame. Which rows meet in a block depends only on ids and counts, never on partitioning,
and blocks sort their rows by id, so results do not depend on partitioning either. Dedup's buckets are many and
small: they stream through an Arrow UDF, many blocks per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from user_spark.pipelines.arrow import batch_columns
from user_spark.pipelines.frames import one_row, shuffle_partitions_setting
from user_spark.pipelines.vectors import ID, VEC

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType

__all__ = ["BUCKET", "bucket_pairs"]

BUCKET = "_bucket"
_LSUB, _RSUB, _NL, _NR = "_lsub", "_rsub", "_nl", "_nr"

#: Shuffle partitions of dedup's buckets hold about this many bytes (Spark's own default input split size).
PARTITION_BYTES = 128 * 1024 * 1024
#: A signature row in Spark's sorter: an UnsafeRow of (id, bucket, count) and its pointer.
_SIGNATURE_ROW_BYTES = 48


def shuffle_partitions(spark: SparkSession, rows: int, row_bytes: int) -> int | None:
    """Partitions for shuffling ``rows`` rows of about ``row_bytes`` each in ``PARTITION_BYTES`` pieces, or
    ``None`` where ``spark.sql.shuffle.partitions`` already cuts them that fine (adaptive execution may then
    coalesce small partitions, which it never does to an explicit partition count).

    A shuffle's sort keeps a partition's row pointers in one array: 245 million LSH signatures of a million rows
    in the 8 partitions of a small local session need 1 GB arrays, and the task failed with
    ``UNABLE_TO_ACQUIRE_MEMORY``; partitions far over memory also spill and merge on disk.

    >>> shuffle_partitions(spark, 245_000_000, 48)  # doctest: +SKIP
    88
    """
    default = shuffle_partitions_setting(spark)
    want = -(-rows * row_bytes // PARTITION_BYTES)
    return int(want) if want > default else None


def _blocks(count: Column, block_rows: int) -> Column:
    from pyspark.sql import functions as F

    return F.greatest(F.lit(1), F.ceil(count / F.lit(block_rows))).cast("int")


def _sub(block_count: Column, salt: int) -> Column:
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.col(ID), F.lit(salt)), block_count).cast("int")


def bucket_pairs(
    signatures: DataFrame,
    vectors: DataFrame,
    *,
    threshold: float,
    block_rows: int,
    id_type: DataType,
    signature_rows: int | None = None,
) -> tuple[DataFrame, dict[str, int]]:
    """``(src, dst)`` edges whose connected components are those of every pair sharing a bucket with cosine
    ``>= threshold``: each batch of blocks sends a spanning forest of its pairs, so a group of ``n``
    near-identical rows costs about ``n`` edges per block, not ``n^2 / 2``.

    ``signatures`` holds ``(_id, _bucket)`` (a row may be in many buckets, e.g. one per LSH band),
    ``vectors`` ``(_id, _vec)``. Buckets of one row are dropped before any vector moves.

    LSH makes hundreds of thousands of buckets of a few rows out of 100k rows, so a grouped pandas UDF (a
    pandas frame and a Python call per bucket) spends its time on overhead. Instead, blocks are hash
    partitioned and sorted, and an Arrow UDF streams each partition, scoring all small blocks of a batch in a
    few batched matmuls (:func:`user_spark.ops.forest.blocks_forest`). A block never spans two calls: the rows
    of a batch's last block wait for the next batch, so memory is a few copies of one Arrow batch
    (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows) plus one block.

    Both shuffles are sized by what they move (:func:`shuffle_partitions`): the signatures by
    ``signature_rows`` when given, the vector copies by a count of the rows in shared buckets (materialised
    once with ``localCheckpoint``, so the window runs once). Also returns the stage's counts
    (:func:`user_spark.pipelines.edges.split_edges`).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_type

    from user_spark.pipelines.edges import edge_batches, edge_schema, split_edges

    spark = signatures.sparkSession
    if signature_rows is not None and (parts := shuffle_partitions(spark, signature_rows, _SIGNATURE_ROW_BYTES)):
        signatures = signatures.repartition(parts, BUCKET)  # the window below keeps this partitioning
    # A window count, not counts joined back: one shuffle of the signatures, and the UDF that makes them runs once.
    counted = signatures.withColumn(_NL, F.count(F.lit(1)).over(Window.partitionBy(BUCKET)))
    shared = (
        counted.where(F.col(_NL) > 1)
        .select(ID, BUCKET, _blocks(F.col(_NL), block_rows).alias(_NL))
        .localCheckpoint(eager=True)
    )
    # every row of a bucket cut into n sub-blocks is copied n times (once per block it meets)
    copies = one_row(shared.select(F.sum(_NL)))[0] or 0
    first = vectors.select(F.size(VEC)).first() if copies else None
    parts = shuffle_partitions(spark, copies, 4 * first[0] + 64) if first else None
    keys = [BUCKET, _LSUB, _RSUB]
    spread = shared.join(vectors, ID).withColumn("_s", _sub(F.col(_NL), 3))
    copied = spread.withColumn("_t", F.explode(F.sequence(F.lit(0), F.col(_NL) - 1))).select(
        BUCKET, F.least("_s", "_t").alias(_LSUB), F.greatest("_s", "_t").alias(_RSUB), "_s", ID, VEC
    )
    # by id within each side too: a float32 score depends on where its rows sit in the GEMM, so shuffle
    # order could flip a pair within an ulp of the threshold between runs
    keyed = (copied.repartition(parts, *keys) if parts else copied.repartition(*keys)).sortWithinPartitions(
        *keys, "_s", ID
    )
    arrow_id = to_arrow_type(id_type)

    def edges(batches):  # type: ignore[no-untyped-def]
        from user_spark.ops.blocks import unit_rows
        from user_spark.ops.forest import BlockCounts, blocks_forest
        from user_spark.ops.streams import block_bounds, whole_blocks

        counts = BlockCounts()
        for cols in whole_blocks((batch_columns(b, [*keys, "_s", ID], VEC) for b in batches), keys):
            starts, splits = block_bounds(cols[BUCKET], cols[_LSUB], cols[_RSUB], cols["_s"])
            roots, members = blocks_forest(cols[ID], unit_rows(cols[VEC]), starts, splits, threshold, counts=counts)
            yield from edge_batches(roots, members, None, arrow_id)
        yield from edge_batches([], [], counts, arrow_id)

    return split_edges(keyed.mapInArrow(edges, edge_schema(id_type)))
