"""Clustering: Spark ML k-means under cosine distance on the embeddings, ``k`` given or chosen by silhouette.

The vectors are laid out the same way whatever the input's partitioning (hash-partitioned by id into a fixed
number of partitions, sorted by id inside each), so a seeded run gives the same clusters on ``local[1]``,
``local[2]`` or a cluster. Only the centroids (k x dim) reach the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from user_spark.embedding.columns import check_text_column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions, coerce_options
from user_spark.errors import OptionError
from user_spark.pipelines.frames import shuffle_partitions_setting
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
    import numpy as np
    from pyspark.sql import DataFrame

__all__ = ["ClusterResult", "cluster"]

logger = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    """What :func:`cluster` found.

    Attributes:
        assignments: ``<id_col>, cluster_id, similarity`` (cosine to the cluster's centroid), one row per input
            row with a vector.
        summary: one row per cluster: ``cluster_id, size, mean_similarity, nearest`` (the ``top_n`` texts, or
            ids without a text column, nearest the centroid, nearest first).
        k: the number of clusters used; centroids: ``(k, dim)`` unit vectors;
        silhouettes: ``{k: silhouette}`` on the sample when ``k`` was chosen from a range (else empty).
    """

    assignments: DataFrame
    summary: DataFrame
    k: int
    centroids: np.ndarray
    silhouettes: dict[int, float] = field(default_factory=dict)
    vectors: DataFrame | None = None  # (_id, _vec), for plots


def _ks(k: int | Sequence[int] | range) -> list[int]:
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(not isinstance(x, int) or x < 2 for x in ks):
        raise OptionError(f"k must be an integer >= 2 or a range of them, e.g. k=20 or k=range(5, 31, 5); got {k!r}")
    return sorted(set(ks))


def _fit(features: DataFrame, k: int, seed: int, max_iter: int):  # type: ignore[no-untyped-def]
    from pyspark.ml.clustering import KMeans

    return KMeans(k=k, seed=seed, maxIter=max_iter, distanceMeasure="cosine", featuresCol="_features").fit(features)


def _silhouette(model, sample: DataFrame) -> float:  # type: ignore[no-untyped-def]
    from pyspark.ml.evaluation import ClusteringEvaluator

    evaluator = ClusteringEvaluator(featuresCol="_features", predictionCol="prediction", distanceMeasure="cosine")
    return float(evaluator.evaluate(model.transform(sample)))


def _assign(vectors: DataFrame, centroids: np.ndarray, id_col: str, id_type: Any) -> DataFrame:
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    schema = StructType([
        StructField(id_col, id_type, False), StructField("cluster_id", IntegerType(), False),
        StructField("similarity", FloatType(), False),
    ])

    def nearest(batches):  # type: ignore[no-untyped-def]
        import numpy as np
        import pandas as pd

        from user_spark.ops.blocks import unit_rows

        for pdf in batches:
            if pdf.empty:
                continue
            sims = unit_rows(pdf[VEC].tolist()) @ centroids.T
            best = sims.argmax(axis=1)
            yield pd.DataFrame({
                id_col: pdf[ID].to_numpy(), "cluster_id": best.astype(np.int32),
                "similarity": sims[np.arange(len(best)), best].astype(np.float32),
            })

    return vectors.mapInPandas(nearest, schema)


def _features(vecs: DataFrame, parts: int) -> DataFrame:
    """``(_id, _vec, _features)`` laid out the same whatever the input's partitioning, checkpointed once."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    return (
        vecs.repartition(parts, ID).sortWithinPartitions(ID)
        .select(ID, VEC, array_to_vector(F.col(VEC)).alias("_features"))
        .localCheckpoint(eager=True)
    )


def _choose_k(
    features: DataFrame, ks: list[int], seed: int, max_iter: int, sample_rows: int
) -> tuple[int, dict[int, float]]:
    """The k of best silhouette on a sample (ties to the smaller k), and every k's silhouette."""
    if len(ks) == 1:
        return ks[0], {}
    n = features.count()
    if n < max(ks):
        raise OptionError(f"k up to {max(ks)} needs at least that many rows with vectors, got {n}")
    sample = hash_sample(features, ID, min(1.0, sample_rows / n), seed).localCheckpoint(eager=True)
    silhouettes: dict[int, float] = {}
    for kk in ks:
        silhouettes[kk] = _silhouette(_fit(sample, kk, seed, max_iter), sample)
        logger.info("k=%d: silhouette %.4f on the sample", kk, silhouettes[kk])
    return max(ks, key=lambda kk: (silhouettes[kk], -kk)), silhouettes


def _cluster_summary(assignments: DataFrame, df: DataFrame, id_col: str, text_col: str | None, top_n: int) -> DataFrame:
    """One row per cluster: size, mean similarity, and the ``top_n`` texts (or ids) nearest its centroid."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sizes = assignments.groupBy("cluster_id").agg(
        F.count(F.lit(1)).alias("size"), F.avg("similarity").alias("mean_similarity")
    )
    order = Window.partitionBy("cluster_id").orderBy(F.col("similarity").desc(), F.col(id_col).asc())
    top = assignments.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= top_n)
    label = F.col(id_col).cast("string")
    if text_col is not None:
        top = top.join(df.select(id_col, text_col), id_col)
        label = F.coalesce(F.col(text_col), label)
    nearest = top.groupBy("cluster_id").agg(
        F.transform(F.sort_array(F.collect_list(F.struct(F.col("_rank"), label.alias("t")))), lambda s: s["t"]).alias(
            "nearest"
        )
    )
    return sizes.join(nearest, "cluster_id", "left").orderBy("cluster_id")


def cluster(
    df: DataFrame,
    *,
    id_col: str,
    text_col: str | None = None,
    embedding_col: str | None = None,
    k: int | Sequence[int] | range = 20,
    seed: int = 7,
    max_iter: int = 30,
    sample_rows: int = 20000,
    top_n: int = 5,
    partitions: int | None = None,
    model: str | None = None,
    check_ids: bool = True,
    embed_options: EmbedOptions | Mapping[str, Any] | None = None,
    metrics: EmbedMetrics | None = None,
) -> ClusterResult:
    """k-means (cosine) over the embeddings of ``df``.

    Args:
        df: rows with a unique id.
        id_col: unique id (integer or string).
        text_col: text to embed (role ``query``) when ``embedding_col`` is not given; also labels clusters.
        embedding_col: existing ``array<float>`` vectors.
        k: number of clusters, or several (``range(5, 31, 5)``): each is fitted on a sample of about
            ``sample_rows`` rows and the best silhouette (cosine) wins; ties go to the smaller k.
        seed: seed of k-means (and of the sample). max_iter: k-means iterations.
        top_n: texts per cluster in ``summary.nearest``.
        partitions: partitions of the k-means input (default ``spark.sql.shuffle.partitions``); part of what
            makes a seeded run reproducible, so keep it fixed between runs you compare.
        model: model for ``text_col`` (default ``deepvk/USER-base``); overrides ``embed_options.model``.
        check_ids: check ids are unique and not null (one pass over the id column).
        embed_options: an :class:`~user_spark.EmbedOptions` for embedding ``text_col``.
        metrics: counters of the texts embedded.

    Returns:
        :class:`ClusterResult` (``assignments``, ``summary``, ``k``, ``centroids``, ``silhouettes``).

    Raises:
        ColumnError: a missing or mistyped column, duplicate ids. OptionError: a bad ``k`` or other option.

    >>> res = cluster(df, id_col="id", embedding_col="emb", k=20, seed=7)  # doctest: +SKIP
    >>> res.assignments   # DataFrame[id: bigint, cluster_id: int, similarity: float]
    >>> res.summary       # DataFrame[cluster_id: int, size: bigint, mean_similarity: double, nearest: array<string>]
    """
    import numpy as np

    ks = _ks(k)
    if top_n < 0 or sample_rows < 10 or max_iter < 1:
        raise OptionError(f"need top_n >= 0, sample_rows >= 10, max_iter >= 1; got {top_n}, {sample_rows}, {max_iter}")
    require_vectors(text_col, embedding_col, "cluster")
    options = coerce_options(embed_options, model=model).replace(role="query")
    check_id_column(df, id_col)
    if text_col is not None:
        check_text_column(df, text_col)
    if check_ids:
        check_unique_ids(df, id_col)
    parts = partitions or shuffle_partitions_setting(df.sparkSession)
    vecs = vector_frame(df, id_col, text_col=text_col, embedding_col=embedding_col, options=options, metrics=metrics)
    features = _features(vecs, parts)
    chosen, silhouettes = _choose_k(features, ks, seed, max_iter, sample_rows)
    fitted = _fit(features, chosen, seed, max_iter)
    centroids = np.stack([np.asarray(c, dtype=np.float32) for c in fitted.clusterCenters()])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    id_type = df.schema[id_col].dataType
    assignments = _assign(features.select(ID, VEC), centroids, id_col, id_type).localCheckpoint(eager=True)
    return ClusterResult(
        assignments=assignments,
        summary=_cluster_summary(assignments, df, id_col, text_col, top_n),
        k=chosen,
        centroids=centroids,
        silhouettes=silhouettes,
        vectors=features.select(ID, VEC),
    )
