"""Blocked similarity on Spark: top-k between two sides, and pairs above a threshold inside buckets.

Both work on frames of ``(_id, _vec, _bucket)`` rows. A bucket holding more than ``block_rows`` rows on a side
is cut into sub-blocks by a hash of the id; every (left sub-block, right sub-block) pair of a bucket is one
group of a grouped pandas UDF, so a task holds at most about ``2 x block_rows`` vectors and computes its GEMM
in chunks (:mod:`user_spark.blockmath`). Rows are copied once per sub-block of the other side, never once per
row: there is no exploded N x M frame. Which rows meet in a group depends only on ids and counts, never on
partitioning, and each group sorts its rows by id, so results do not depend on partitioning either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .vectors import ID, VEC

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

__all__ = ["BUCKET", "topk_join", "bucket_pairs", "merge_topk"]

BUCKET = "_bucket"
_LSUB, _RSUB, _NL, _NR = "_lsub", "_rsub", "_nl", "_nr"


def _blocks(count: Column, block_rows: int) -> Column:
    from pyspark.sql import functions as F

    return F.greatest(F.lit(1), F.ceil(count / F.lit(block_rows))).cast("int")


def _sub(block_count: Column, salt: int) -> Column:
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.col(ID), F.lit(salt)), block_count).cast("int")


def _stack(pdf):  # type: ignore[no-untyped-def]
    import numpy as np

    from .blockmath import sort_by_id, unit_rows

    ids = pdf[ID].to_numpy()
    vecs = unit_rows(pdf[VEC].tolist())
    ids, vecs = sort_by_id(ids, vecs)
    return np.asarray(ids), vecs


def topk_join(
    left: DataFrame,
    right: DataFrame,
    *,
    k: int,
    min_score: float | None,
    exclude_same_id: bool,
    block_rows: int,
    left_id_type: DataType,
    right_id_type: DataType,
) -> DataFrame:
    """``(_lid, _rid, _score)``: for each left row, its best ``k`` right rows within each bucket it belongs to.

    ``left`` and ``right`` hold ``(_id, _vec, _bucket)``; a left row may appear in several buckets (IVF probes)
    and every right row in exactly one, so no pair is produced twice. Merge with :func:`merge_topk`.
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.types import FloatType, StructField, StructType

    lc = left.groupBy(BUCKET).agg(F.count(F.lit(1)).alias(_NL))
    rc = right.groupBy(BUCKET).agg(F.count(F.lit(1)).alias(_NR))
    sizes = lc.join(rc, BUCKET).select(
        BUCKET, _blocks(F.col(_NL), block_rows).alias(_NL), _blocks(F.col(_NR), block_rows).alias(_NR)
    )
    lx = (
        left.join(F.broadcast(sizes), BUCKET)
        .withColumn(_LSUB, _sub(F.col(_NL), 1))
        .withColumn(_RSUB, F.explode(F.sequence(F.lit(0), F.col(_NR) - 1)))
        .select(BUCKET, _LSUB, _RSUB, ID, VEC)
    )
    rx = (
        right.join(F.broadcast(sizes), BUCKET)
        .withColumn(_RSUB, _sub(F.col(_NR), 2))
        .withColumn(_LSUB, F.explode(F.sequence(F.lit(0), F.col(_NL) - 1)))
        .select(BUCKET, _LSUB, _RSUB, ID, VEC)
    )
    schema = StructType([
        StructField("_lid", left_id_type, False),
        StructField("_rid", right_id_type, False),
        StructField("_score", FloatType(), False),
    ])

    def pair_topk(lpdf: pd.DataFrame, rpdf: pd.DataFrame) -> pd.DataFrame:
        from .blockmath import block_topk

        if lpdf.empty or rpdf.empty:
            return pd.DataFrame({"_lid": lpdf[ID][:0], "_rid": rpdf[ID][:0], "_score": pd.Series([], dtype="float32")})
        lids, lvecs = _stack(lpdf)
        rids, rvecs = _stack(rpdf)
        a, b, s = block_topk(lids, lvecs, rids, rvecs, k, min_score=min_score, exclude_same_id=exclude_same_id)
        return pd.DataFrame({"_lid": a, "_rid": b, "_score": s})

    keys = [BUCKET, _LSUB, _RSUB]
    return lx.groupBy(*keys).cogroup(rx.groupBy(*keys)).applyInPandas(pair_topk, schema)


def merge_topk(candidates: DataFrame, k: int, left_name: str, right_name: str) -> DataFrame:
    """Keep each left id's ``k`` best candidates across blocks: ``(left_name, right_name, score, rank)``.

    Ties in score go to the smaller right id; memory per left id is bounded by (blocks x k) candidates.
    """
    from pyspark.sql import functions as F

    best = candidates.groupBy("_lid").agg(
        F.slice(F.sort_array(F.collect_list(F.struct((-F.col("_score")).alias("neg"), F.col("_rid").alias("rid")))), 1, k)
        .alias("_best")
    )
    return best.select(
        F.col("_lid").alias(left_name), F.posexplode("_best").alias("_pos", "_c")
    ).select(
        left_name,
        F.col("_c.rid").alias(right_name),
        (-F.col("_c.neg")).cast("float").alias("score"),
        (F.col("_pos") + 1).cast("int").alias("rank"),
    )


def bucket_pairs(
    signatures: DataFrame, vectors: DataFrame, *, threshold: float, block_rows: int, id_type: DataType,
    forest: bool = False,
) -> DataFrame:
    """``(src, dst, score)``, ``src < dst``: every pair sharing a bucket with cosine ``>= threshold``, once.

    ``signatures`` holds ``(_id, _bucket)`` (a row may be in many buckets, e.g. one per LSH band),
    ``vectors`` ``(_id, _vec)``. Buckets of one row are dropped before any vector moves. A pair found in
    several buckets keeps its highest score.

    ``forest=True`` returns ``(src, dst)`` edges of a spanning forest of each block's pairs instead
    (:func:`user_spark.blockmath.threshold_forest`): the same connected components, at most ``2 x block_rows``
    edges per block however many rows are duplicates of each other (all pairs of a group of ``n``
    near-identical rows would be ``n^2 / 2``).
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.types import FloatType, StructField, StructType

    counts = signatures.groupBy(BUCKET).agg(F.count(F.lit(1)).alias(_NL)).where(F.col(_NL) > 1)
    sized = (
        signatures.join(counts, BUCKET).join(vectors, ID)
        .withColumn(_NL, _blocks(F.col(_NL), block_rows))
    )
    keyed = (
        sized.withColumn("_s", _sub(F.col(_NL), 3))
        .withColumn("_t", F.explode(F.sequence(F.lit(0), F.col(_NL) - 1)))
        .select(BUCKET, ID, VEC, "_s", F.least("_s", "_t").alias(_LSUB), F.greatest("_s", "_t").alias(_RSUB))
    )
    fields = [StructField("src", id_type, False), StructField("dst", id_type, False)]
    schema = StructType(fields if forest else [*fields, StructField("score", FloatType(), False)])

    def pairs(pdf: pd.DataFrame) -> pd.DataFrame:
        from .blockmath import threshold_forest, threshold_pairs

        find = threshold_forest if forest else threshold_pairs
        a_sub, b_sub = int(pdf[_LSUB].iloc[0]), int(pdf[_RSUB].iloc[0])
        ids_a, va = _stack(pdf[pdf["_s"] == a_sub])
        ids_b, vb = (None, None) if a_sub == b_sub else _stack(pdf[pdf["_s"] == b_sub])
        return pd.DataFrame(dict(zip(schema.names, find(ids_a, va, ids_b, vb, threshold))))

    found = keyed.groupBy(BUCKET, _LSUB, _RSUB).applyInPandas(pairs, schema)
    if forest:
        return found.dropDuplicates(["src", "dst"])
    return found.groupBy("src", "dst").agg(F.max("score").alias("score"))
