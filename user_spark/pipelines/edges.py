"""What an edge stage sends: edges of a spanning forest, and rows of counts next to them (dedup's stages).

An Arrow UDF that scores blocks cannot update driver-side counters over Spark Connect (no accumulators), so it
sends its counts as extra rows: ``src``/``dst`` are null there, and the count columns are null in edge rows.
:func:`split_edges` materialises the output once and separates the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from user_spark.pipelines.frames import one_row

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

    from user_spark.ops.forest import BlockCounts

__all__ = ["EDGE_COUNTS", "edge_batches", "edge_schema", "split_edges"]

#: Columns of the counts rows an edge stage sends next to its edges (null in edge rows).
EDGE_COUNTS = ("_copies", "_scored", "_found", "_stars")


def edge_schema(id_type: DataType) -> Any:
    """``src, dst`` (an edge; null in a counts row) and :data:`EDGE_COUNTS` (null in an edge row)."""
    from pyspark.sql.types import LongType, StructField, StructType

    return StructType(
        [StructField("src", id_type, True), StructField("dst", id_type, True)]
        + [StructField(name, LongType(), True) for name in EDGE_COUNTS]
    )


def edge_batches(src: Any, dst: Any, counts: BlockCounts | None, arrow_id: Any) -> list[pa.RecordBatch]:
    """Arrow batches of :func:`edge_schema`: the edges, and one counts row when ``counts`` is given."""
    import pyarrow as pa

    names = ["src", "dst", *EDGE_COUNTS]
    out = []
    if len(src):
        nulls = [pa.nulls(len(src), pa.int64())] * len(EDGE_COUNTS)
        out.append(pa.RecordBatch.from_arrays([pa.array(src, type=arrow_id), pa.array(dst, type=arrow_id),
                                               *nulls], names=names))
    if counts is not None:
        values = [counts.copies, counts.scored, counts.found, counts.stars]
        out.append(pa.RecordBatch.from_arrays(
            [pa.nulls(1, arrow_id), pa.nulls(1, arrow_id), *(pa.array([v], pa.int64()) for v in values)],
            names=names,
        ))
    return out


def split_edges(out: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """Materialise an edge stage's output once; its edges (deduplicated) and its summed counts."""
    from pyspark.sql import functions as F

    done = out.localCheckpoint(eager=True)
    row = one_row(done.agg(*(F.sum(name).alias(name) for name in EDGE_COUNTS)))
    counts = {name.lstrip("_"): int(row[name] or 0) for name in EDGE_COUNTS}
    edges = done.where(F.col("src").isNotNull()).select("src", "dst").dropDuplicates(["src", "dst"])
    return edges, counts
