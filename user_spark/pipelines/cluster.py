"""Clustering: spherical k-means (cosine) on the embeddings, ``k`` given or chosen by silhouette.

Linear in the rows, one stored copy of the vectors (the embedding checkpoint; none for an ``embedding_col``):

1. a sample of at most ``sample_rows`` rows, picked by a hash of the id
   (:func:`user_spark.pipelines.kmeans.sample_vectors`), comes to the driver as Arrow, and k-means is trained
   there (:func:`user_spark.ops.kmeans.train`: greedy k-means++, Lloyd to convergence, ``restarts`` seedings, the
   best objective kept; two-level from 4,096 centroids);
2. one map over the rows assigns each to its nearest centroid (:func:`user_spark.pipelines.kmeans.assign`): no
   shuffle of vectors, and a row's cluster depends only on the row, the sample and the seed;
3. small aggregates give each cluster's size, mean similarity and the texts nearest its centroid.

So a seeded run gives the same clusters whatever the partitioning, ``spark.sql.shuffle.partitions`` or cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from user_spark.embedding.columns import column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions, coerce_options
from user_spark.errors import ColumnError, OptionError
from user_spark.pipelines.vectors import (
    ID,
    check_unique_ids,
    check_vector_source,
    prepare_vectors,
    require_vectors,
    vector_frame,
)

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import DataFrame

    from user_spark.ops.kmeans import KMeansFit

__all__ = ["DEFAULT_SAMPLE_ROWS", "ClusterResult", "cluster"]

logger = logging.getLogger(__name__)

#: Rows k-means trains on by default (at least 64 per centroid): 100,000 x 768 float32 is 0.3 GB on the driver.
DEFAULT_SAMPLE_ROWS = 100_000


@dataclass
class ClusterResult:
    """What :func:`cluster` found.

    Attributes:
        assignments: ``<id_col>, cluster_id, similarity`` (cosine to the cluster's centroid), one row per input
            row with a vector.
        summary: one row per cluster: ``cluster_id, size, mean_similarity, nearest`` (the ``top_n`` texts, or
            ids without a text column, nearest the centroid, nearest first).
        k: the number of clusters used: the ``k`` asked (or chosen), or fewer when the sample holds fewer
            distinct vectors (``stats["k_requested"]`` says what was asked).
        centroids: ``(k, dim)`` unit vectors.
        silhouettes: ``{k: silhouette}`` on the sample when ``k`` was chosen from a range (else empty).
        stats: ``rows`` (with a vector), ``sample_rows``, ``k_requested``, ``objective`` (mean cosine of the
            sample to its nearest centroid), ``restart`` and ``iterations`` of the kept k-means run,
            ``vector_copies_per_row`` (vectors shuffled per row: 0, the assignment is a map) and
            ``pairs_scored_per_row`` (centroids each row is compared with).
    """

    assignments: DataFrame
    summary: DataFrame
    k: int
    centroids: np.ndarray
    silhouettes: dict[int, float] = field(default_factory=dict)
    vectors: DataFrame | None = None  # (_id, _vec), for plots
    stats: dict[str, Any] = field(default_factory=dict)


def _ks(k: int | Sequence[int] | range) -> list[int]:
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(not isinstance(x, int) or isinstance(x, bool) or x < 2 for x in ks):
        raise OptionError(f"k must be an integer >= 2 or a range of them, e.g. k=20 or k=range(5, 31, 5); got {k!r}")
    return sorted(set(ks))


def _check_options(top_n: int, sample_rows: int | None, max_iter: int, restarts: int) -> None:
    if top_n < 0 or max_iter < 1 or restarts < 1 or (sample_rows is not None and sample_rows < 10):
        raise OptionError(
            f"need top_n >= 0, max_iter >= 1, restarts >= 1 and sample_rows >= 10; got {top_n}, {max_iter}, "
            f"{restarts}, {sample_rows}"
        )


def _check_rows(rows: int, ks: list[int], text_col: str | None, embedding_col: str | None) -> None:
    """Refuse an empty input, and a ``k`` above the rows, before any k-means runs."""
    source = f"embedding column {embedding_col!r}" if embedding_col else f"text column {text_col!r}"
    if rows == 0:
        raise ColumnError(f"cluster found no rows with a vector: the input is empty or its {source} is null in every "
                          "row")
    if ks[-1] > rows:
        asked = f"k={ks[0]}" if len(ks) == 1 else f"k up to {ks[-1]}"
        raise OptionError(
            f"{asked} needs at least that many rows with a vector; the input has {rows} (rows with a null "
            f"{source} are left out). Ask for k <= {rows}"
        )


def _fit(
    sample: np.ndarray, ks: list[int], seed: int, restarts: int, max_iter: int
) -> tuple[KMeansFit, int, dict[int, float]]:
    """The fit of the single ``k``, or of the ``k`` of best silhouette on the sample (ties to the smaller k); the
    ``k`` it was asked for; every ``k``'s silhouette."""
    from user_spark.ops.kmeans import cosine_silhouette, train

    if len(ks) == 1:
        return train(sample, ks[0], seed=seed, restarts=restarts, max_iter=max_iter), ks[0], {}
    fits, silhouettes = {}, {}
    for kk in ks:
        fits[kk] = train(sample, kk, seed=seed, restarts=restarts, max_iter=max_iter)
        labels, _ = fits[kk].centroids.nearest(sample)
        silhouettes[kk] = cosine_silhouette(sample, labels[:, 0]) if fits[kk].centroids.k > 1 else -1.0
        logger.info("k=%d: silhouette %.4f on %d sampled rows", kk, silhouettes[kk], len(sample))
    best = max(ks, key=lambda kk: (silhouettes[kk], -kk))
    return fits[best], best, silhouettes


def _stats(fit: KMeansFit, rows: int, sample_rows: int, asked: int) -> dict[str, Any]:
    index = fit.centroids
    if index.coarse is None:
        compared = float(index.k)
    else:  # the coarse cells, then the centroids of the probed ones
        compared = index.coarse.shape[0] + index.probe * index.k / index.coarse.shape[0]
    if index.k < asked:
        logger.warning("k=%d asked, but the sample holds only %d distinct vectors: %d clusters", asked, index.k,
                       index.k)
    return {
        "rows": rows, "sample_rows": sample_rows, "k_requested": asked, "objective": fit.objective,
        "restart": fit.restart, "iterations": fit.iterations, "vector_copies_per_row": 0.0,
        "pairs_scored_per_row": compared,
    }


def _assignments(vecs: DataFrame, fit: KMeansFit, id_col: str, id_type: Any) -> DataFrame:
    from pyspark.sql import functions as F

    from user_spark.pipelines.kmeans import CELL, SIM, assign

    nearest = assign(vecs, fit.centroids, id_type=id_type)
    return nearest.select(F.col(ID).alias(id_col), F.col(CELL).alias("cluster_id"), F.col(SIM).alias("similarity"))


def _cluster_summary(assignments: DataFrame, df: DataFrame, id_col: str, text_col: str | None, top_n: int) -> DataFrame:
    """One row per cluster: size, mean similarity, and the ``top_n`` texts (or ids) nearest its centroid."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sizes = assignments.groupBy("cluster_id").agg(
        F.count(F.lit(1)).alias("size"), F.avg("similarity").alias("mean_similarity")
    )
    order = Window.partitionBy("cluster_id").orderBy(F.col("similarity").desc(), column(id_col).asc())
    top = assignments.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= top_n)
    label = column(id_col).cast("string")
    if text_col is not None:
        texts = df.select(column(id_col).alias("_text_id"), column(text_col).alias("_text"))
        top = top.join(texts, column(id_col) == F.col("_text_id"))
        label = F.coalesce(F.col("_text"), label)
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
    max_iter: int = 100,
    restarts: int = 3,
    sample_rows: int | None = None,
    top_n: int = 5,
    partitions: int | None = None,
    model: str | None = None,
    check_ids: bool = True,
    embed_options: EmbedOptions | Mapping[str, Any] | None = None,
    metrics: EmbedMetrics | None = None,
) -> ClusterResult:
    """Spherical k-means (cosine) over the embeddings of ``df``.

    Args:
        df: rows with a unique id.
        id_col: unique id (integer or string).
        text_col: text to embed (role ``query``) when ``embedding_col`` is not given; also labels clusters.
        embedding_col: existing vectors (``array<float>``, ``array<double>`` or float16 ``binary``).
        k: number of clusters, or several (``range(5, 31, 5)``): each is fitted on the sample and the best
            silhouette (cosine) wins; ties go to the smaller k. At most the number of rows with a vector.
        seed: seed of the sample and of k-means; the same seed gives the same clusters on any partitioning.
        max_iter: Lloyd iterations at most per k-means run (a run stops earlier when no row moves).
        restarts: k-means runs from different seedings; the best objective (mean cosine to the nearest
            centroid) is kept, as scikit-learn's ``n_init``.
        sample_rows: rows k-means trains on, collected to the driver (``sample_rows x dim x 4`` bytes);
            default ``max(100,000, 64 x k)``. All rows are assigned, whatever the sample.
        top_n: texts per cluster in ``summary.nearest``.
        partitions: ignored (kept for compatibility): results no longer depend on any partitioning.
        model: model for ``text_col`` (default ``deepvk/USER-base``); overrides ``embed_options.model``.
        check_ids: check ids are unique and not null (one pass over the id column).
        embed_options: an :class:`~user_spark.EmbedOptions` for embedding ``text_col``.
        metrics: counters of the texts embedded.

    Returns:
        :class:`ClusterResult` (``assignments``, ``summary``, ``k``, ``centroids``, ``silhouettes``, ``stats``).

    Raises:
        ColumnError: a missing or mistyped column, duplicate ids, no row with a vector.
        OptionError: a bad ``k`` (below 2, or more than the rows with a vector) or another option.

    >>> res = cluster(df, id_col="id", embedding_col="emb", k=20, seed=7)  # doctest: +SKIP
    >>> res.assignments   # DataFrame[id: bigint, cluster_id: int, similarity: float]
    >>> res.summary       # DataFrame[cluster_id: int, size: bigint, mean_similarity: double, nearest: array<string>]
    """
    from user_spark.pipelines.kmeans import sample_vectors

    del partitions
    ks = _ks(k)
    _check_options(top_n, sample_rows, max_iter, restarts)
    require_vectors(text_col, embedding_col, "cluster")
    options = coerce_options(embed_options, model=model).replace(role="query")
    check_vector_source(df, id_col, text_col, embedding_col)
    prepared = prepare_vectors(df.sparkSession, options, embeds=embedding_col is None)
    if check_ids:
        check_unique_ids(df, id_col)
    vecs = vector_frame(df, id_col, text_col=text_col, embedding_col=embedding_col, options=prepared, metrics=metrics)
    rows = vecs.count()  # an embedded frame is checkpointed: the count runs no model
    _check_rows(rows, ks, text_col, embedding_col)
    wanted = sample_rows or max(DEFAULT_SAMPLE_ROWS, 64 * ks[-1])
    _, sample = sample_vectors(vecs, wanted, seed=seed, total=rows)
    fit, asked, silhouettes = _fit(sample, ks, seed, restarts, max_iter)
    assignments = _assignments(vecs, fit, id_col, df.schema[id_col].dataType).localCheckpoint(eager=True)
    return ClusterResult(
        assignments=assignments,
        summary=_cluster_summary(assignments, df, id_col, text_col, top_n),
        k=fit.centroids.k,
        centroids=fit.centroids.vectors,
        silhouettes=silhouettes,
        vectors=vecs,
        stats=_stats(fit, rows, len(sample), asked),
    )
