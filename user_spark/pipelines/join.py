"""Similarity join: the top-k right rows for each left row by cosine, exact (blocked GEMM) or approximate (IVF).

- ``method="exact"``: the right side in blocks, one GEMM per (left block, right block), the top k of each
  merged across blocks (:mod:`user_spark.pipelines.blocks`).
- ``method="ivf"``: coarse spherical k-means on a bounded sample of the right side (:mod:`user_spark.ops.ivf`);
  each right row goes to its nearest list, each left row is compared only with the ``nprobe`` lists nearest to
  it. Defaults (``nlist ~ sqrt(n_right)``, ``nprobe = max(16, nlist/4)``) reached recall@10 >= 0.95 against
  exact in ``bench/bench_jobs.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from user_spark.embedding.columns import check_text_column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions, coerce_options
from user_spark.errors import ColumnError, OptionError
from user_spark.pipelines.vectors import (
    ID,
    VEC,
    check_id_column,
    check_unique_ids,
    hash_sample,
    require_vectors,
    vector_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

__all__ = ["similarity_join"]

logger = logging.getLogger(__name__)

Method = Literal["exact", "ivf"]


def _check_side(df: DataFrame, id_col: str, text_col: str | None, embedding_col: str | None, what: str,
                check_ids: bool) -> None:
    check_id_column(df, id_col)
    require_vectors(text_col, embedding_col, f"similarity_join's {what} side", text_arg=f"{what}_text_col=",
                    embedding_arg=f"{what}_embedding_col=")
    if text_col is not None and embedding_col is None:
        check_text_column(df, text_col)
    if check_ids:
        check_unique_ids(df, id_col, what=f"{what} side")


def _train_centroids(right: DataFrame, n_right: int, nlist: int, seed: int, max_train_rows: int):  # type: ignore[no-untyped-def]
    """Coarse centroids from a sample chosen by id hash (the same rows for any partitioning), on the driver."""
    import numpy as np

    from user_spark.ops.blocks import sort_by_id, unit_rows
    from user_spark.ops.ivf import spherical_kmeans

    sample = hash_sample(right, ID, min(1.0, max_train_rows / max(n_right, 1)), seed)
    rows = sample.limit(max_train_rows * 2).collect()
    ids = np.array([r[ID] for r in rows], dtype=object)
    vecs = unit_rows([r[VEC] for r in rows])
    ids, vecs = sort_by_id(ids, vecs)
    return spherical_kmeans(vecs[:max_train_rows], nlist, seed=seed)


def _assign(df: DataFrame, centroids, nprobe: int, id_type: Any) -> DataFrame:  # type: ignore[no-untyped-def]
    """``(_id, _vec, _bucket)``: one row per probed list (``nprobe=1``: the nearest list)."""
    from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

    from user_spark.pipelines.blocks import BUCKET

    schema = StructType([
        StructField(ID, id_type, False), StructField(VEC, ArrayType(FloatType(), False), False),
        StructField(BUCKET, LongType(), False),
    ])

    def probe(batches):  # type: ignore[no-untyped-def]
        import numpy as np
        import pandas as pd

        from user_spark.ops.blocks import unit_rows
        from user_spark.ops.ivf import nearest_lists

        for pdf in batches:
            if pdf.empty:
                continue
            lists = nearest_lists(unit_rows(pdf[VEC].tolist()), centroids, nprobe)
            reps = lists.shape[1]
            yield pd.DataFrame({
                ID: np.repeat(pdf[ID].to_numpy(), reps),
                VEC: np.repeat(pdf[VEC].to_numpy(), reps),
                BUCKET: lists.reshape(-1).astype(np.int64),
            })

    return df.mapInPandas(probe, schema)


def _check_options(k: int, method: str, min_score: float | None, block_rows: int, nlist: int | None,
                   nprobe: int | None, left_id_col: str, right_id_col: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise OptionError(f"k must be a positive integer, got {k!r}")
    if method not in ("exact", "ivf"):
        raise OptionError(f"method must be 'exact' or 'ivf', got {method!r}")
    if min_score is not None and not -1.0 <= min_score <= 1.0:
        raise OptionError(f"min_score must be a cosine in [-1, 1], got {min_score!r}")
    if block_rows < 1:
        raise OptionError(f"block_rows must be >= 1, got {block_rows}")
    for name, value in (("nlist", nlist), ("nprobe", nprobe)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise OptionError(f"{name} must be a positive integer, got {value!r}")
    for name in {left_id_col, right_id_col}:
        if name in ("score", "rank"):
            raise ColumnError(f"Id column may not be named {name!r} (an output column); rename it")


def _ivf_buckets(lvec: DataFrame, rvec: DataFrame, nlist: int | None, nprobe: int | None, seed: int,
                 max_train_rows: int, left_type: DataType, right_type: DataType) -> tuple[DataFrame, DataFrame]:
    from user_spark.ops.ivf import default_nlist, default_nprobe

    n_right = rvec.count()
    lists = nlist or default_nlist(n_right)
    probes = min(nprobe or default_nprobe(lists), lists)
    centroids = _train_centroids(rvec, n_right, lists, seed, max_train_rows)
    logger.info("IVF: %d lists trained, %d probed per left row", len(centroids), probes)
    return _assign(lvec, centroids, probes, left_type), _assign(rvec, centroids, 1, right_type)


def similarity_join(
    left: DataFrame,
    right: DataFrame | None = None,
    *,
    left_id_col: str,
    right_id_col: str | None = None,
    left_text_col: str | None = None,
    right_text_col: str | None = None,
    left_embedding_col: str | None = None,
    right_embedding_col: str | None = None,
    k: int = 10,
    min_score: float | None = None,
    method: Method = "exact",
    nlist: int | None = None,
    nprobe: int | None = None,
    exclude_self: bool | None = None,
    block_rows: int = 8192,
    seed: int = 0,
    max_train_rows: int = 65536,
    model: str | None = None,
    check_ids: bool = True,
    embed_options: EmbedOptions | Mapping[str, Any] | None = None,
    metrics: EmbedMetrics | None = None,
) -> DataFrame:
    """The ``k`` most similar right rows of every left row.

    Args:
        left, right: the two sides; ``right=None`` joins ``left`` with itself (self-join), leaving out each
            row's match with itself unless ``exclude_self=False``.
        left_id_col, right_id_col: unique ids (``right_id_col`` defaults to ``left_id_col``).
        left_text_col, right_text_col: text to embed, left as ``query``, right as ``passage`` (a self-join
            embeds once, as ``query``).
        left_embedding_col, right_embedding_col: existing ``array<float>`` vectors instead of text.
        k: matches per left row. min_score: leave out matches below this cosine.
        method: ``"exact"`` (blocked GEMM) or ``"ivf"`` (approximate; ``nlist`` lists, ``nprobe`` probed).
        block_rows: rows per block; a task holds about two blocks of vectors.
        seed: seed of the IVF sample and k-means. max_train_rows: IVF training sample size cap (on the driver).
        model: model for the text columns (default ``deepvk/USER-base``); overrides ``embed_options.model``.
        check_ids: check ids are unique and not null (one pass over each id column).
        embed_options: an :class:`~user_spark.EmbedOptions` for the text columns (roles as above).
        metrics: counters of the texts embedded.

    Returns:
        ``<left id>, <right id>, score (float cosine), rank (1 = best)``; ties go to the smaller right id.
        The id columns keep the inputs' names; if both sides use the same name, the right one gets ``_right``.

    Raises:
        ColumnError: a missing or mistyped column, duplicate ids.
        OptionError: ``k < 1``, an unknown method, ``min_score`` outside [-1, 1], bad ``nlist``/``nprobe``.

    >>> similarity_join(queries, passages, left_id_col="qid", right_id_col="pid", left_text_col="question",
    ...                 right_text_col="passage", k=10)  # doctest: +SKIP
    DataFrame[qid: bigint, pid: bigint, score: float, rank: int]
    """
    from pyspark.sql import functions as F

    from user_spark.pipelines.blocks import BUCKET, merge_topk, topk_join

    self_join = right is None
    right_id_col = right_id_col or left_id_col
    _check_options(k, method, min_score, block_rows, nlist, nprobe, left_id_col, right_id_col)
    options = coerce_options(embed_options, model=model)
    exclude_self = self_join if exclude_self is None else exclude_self
    if right is None:
        right, right_text_col, right_embedding_col = left, left_text_col, left_embedding_col
    _check_side(left, left_id_col, left_text_col, left_embedding_col, "left", check_ids)
    if not self_join:
        _check_side(right, right_id_col, right_text_col, right_embedding_col, "right", check_ids)
    left_type, right_type = left.schema[left_id_col].dataType, right.schema[right_id_col].dataType
    if exclude_self and left_type != right_type:
        raise ColumnError(f"exclude_self compares ids, but they differ in type: {left_type.simpleString()} "
                          f"and {right_type.simpleString()}")
    lvec = vector_frame(left, left_id_col, text_col=left_text_col, embedding_col=left_embedding_col,
                        options=options.replace(role="query"), metrics=metrics)
    if self_join:  # fresh column identities: Spark rejects a join of a frame with itself by the same attributes
        rvec = lvec.select(F.col(ID).alias(ID), F.col(VEC).alias(VEC))
    else:
        rvec = vector_frame(right, right_id_col, text_col=right_text_col, embedding_col=right_embedding_col,
                            options=options.replace(role="passage"), metrics=metrics)
    if method == "exact":
        lb, rb = lvec.withColumn(BUCKET, F.lit(0).cast("long")), rvec.withColumn(BUCKET, F.lit(0).cast("long"))
    else:
        lb, rb = _ivf_buckets(lvec, rvec, nlist, nprobe, seed, max_train_rows, left_type, right_type)
    found = topk_join(
        lb, rb, k=k, min_score=min_score, exclude_same_id=exclude_self, block_rows=block_rows,
        left_id_type=left_type, right_id_type=right_type,
    )
    right_out = f"{right_id_col}_right" if right_id_col == left_id_col else right_id_col
    return merge_topk(found, k, left_id_col, right_out)
