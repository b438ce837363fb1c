"""k-means on Spark: centroids fitted to a bounded sample on the driver, rows assigned by one map (no shuffle).

Shared by clustering, dedup's partitions and the IVF join; the math is :mod:`user_spark.ops.kmeans`.

- :func:`sample_vectors` picks about ``rows`` rows of a ``(_id, _vec)`` frame by a hash of the id with the
  seed (the same rows whatever the partitioning), collects them as one Arrow table (one float32 buffer, no
  Python object per row) and orders them by that hash, so a seeded fit is the same on any cluster.
- :func:`fit_kmeans` trains :func:`user_spark.ops.kmeans.train` on such a sample.
- :func:`assign` runs :class:`~user_spark.ops.kmeans.Centroids` in a ``mapInArrow`` over the frame: each row's
  nearest centroids (or its centroids within a radius), with its vector kept as float32 or float16 when asked.
  A row's result depends on the row alone, never on the batch or partition it arrives in. The centroids reach
  executors as a broadcast variable on classic Spark (inside the UDF's closure over Spark Connect).

Memory: the driver holds the sample (``rows x dim x 4`` bytes, twice while it converts) and the centroids;
an executor holds one Arrow batch and ``4096 x k`` similarity scores (``4096 x probed centroids``, two-level).

>>> fit = fit_kmeans(vecs, 100, seed=7, sample_rows=50_000)  # doctest: +SKIP
>>> assign(vecs, fit.centroids, id_type=LongType()).columns  # doctest: +SKIP
['_id', '_cell', '_rank', '_sim']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from user_spark.pipelines.arrow import collect_arrow, vector_matrix
from user_spark.pipelines.vectors import ID, VEC

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

    from user_spark.ops.kmeans import Centroids, KMeansFit

__all__ = ["CELL", "RANK", "SIM", "assign", "fit_kmeans", "sample_vectors", "ship"]

CELL, RANK, SIM = "_cell", "_rank", "_sim"
_HASH_BUCKETS = 1 << 40


def sample_vectors(
    vectors: DataFrame, rows: int, *, seed: int, total: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, unit float32 matrix)`` of ``min(rows, total)`` rows of ``(_id, _vec)`` (about that many when the
    hash draws short), the rows of smallest ``xxhash64(_id, seed)``, in that order.

    Args:
        vectors: ``(_id, _vec)`` rows (``_vec`` an ``array<float>``).
        rows: sample size; the driver holds ``rows x dim`` float32 values.
        seed: seed of the hash that picks the rows.
        total: rows of ``vectors`` when known (else counted: one pass).
    """
    import numpy as np
    from pyspark.sql import functions as F

    from user_spark.ops.blocks import unit_rows

    total = vectors.count() if total is None else total
    if rows <= 0 or total <= 0:
        return np.zeros(0, dtype=object), np.zeros((0, 0), dtype=np.float32)
    key = F.pmod(F.xxhash64(F.col(ID), F.lit(seed)), F.lit(_HASH_BUCKETS))
    frame = vectors.select(key.alias("_key"), F.col(ID), F.col(VEC))
    # enough rows that the draw falls short of `rows` only about once in a million
    fraction = (rows + 5 * math.sqrt(rows) + 32) / total
    if fraction < 1.0:
        frame = frame.where(F.col("_key") < int(fraction * _HASH_BUCKETS))
    table = collect_arrow(frame)
    ids = table.column(ID).to_numpy(zero_copy_only=False)
    keys = table.column("_key").to_numpy(zero_copy_only=False)
    by_id = np.argsort(ids, kind="stable")  # equal hashes (vanishingly rare) then go by id
    order = by_id[np.argsort(keys[by_id], kind="stable")][:rows]
    matrix = vector_matrix(table.column(VEC)) if len(ids) else np.zeros((0, 0), dtype=np.float32)
    return ids[order], unit_rows(matrix[order])


def fit_kmeans(
    vectors: DataFrame,
    k: int,
    *,
    seed: int,
    sample_rows: int,
    total: int | None = None,
    **train_options: Any,
) -> KMeansFit:
    """Spherical k-means of ``(_id, _vec)`` rows, trained on the driver on a sample (:func:`sample_vectors`).

    ``train_options`` go to :func:`user_spark.ops.kmeans.train` (``restarts``, ``max_iter``, ``two_level_from``,
    ``probe``). Raises ``ValueError`` when the frame has no rows.
    """
    from user_spark.ops.kmeans import train

    _, sample = sample_vectors(vectors, sample_rows, seed=seed, total=total)
    return train(sample, k, seed=seed, **train_options)


def ship(spark: SparkSession, value: Any) -> Callable[[], Any]:
    """A function that returns ``value`` on an executor: read from a broadcast variable on classic Spark (sent
    once per executor), or carried in the closure over Spark Connect (which has no broadcast variables)."""
    from user_spark.connect import is_connect

    if is_connect(spark):
        return lambda: value
    handle = spark.sparkContext.broadcast(value)
    return lambda: handle.value


def assign(
    vectors: DataFrame,
    centroids: Centroids,
    *,
    id_type: DataType,
    nearest: int = 1,
    radius: float | None = None,
    max_cells: int = 4,
    keep_vectors: Literal["float32", "float16"] | None = None,
) -> DataFrame:
    """One row per (row, centroid) it is assigned to: ``_id``, ``_cell`` (int), ``_rank`` (0: the nearest),
    ``_sim`` (float cosine), and with ``keep_vectors`` the row's unit vector as ``_vec`` (``array<float>`` or
    float16 ``binary``).

    ``radius=None``: the ``nearest`` most similar centroids (:meth:`Centroids.nearest`); else the nearest one and
    those whose boundary is within ``radius`` of the row, ``max_cells`` at most (:meth:`Centroids.within`).
    """
    from pyspark.sql.types import ByteType, FloatType, IntegerType, StructField, StructType

    from user_spark.embedding.storage import spark_type

    fields = [
        StructField(ID, id_type, False),
        StructField(CELL, IntegerType(), False),
        StructField(RANK, ByteType(), False),
        StructField(SIM, FloatType(), False),
    ]
    if keep_vectors is not None:
        fields.append(StructField(VEC, spark_type(keep_vectors), False))
    schema = StructType(fields)
    shipped = ship(vectors.sparkSession, centroids)

    def run(batches):  # type: ignore[no-untyped-def]
        for batch in batches:
            if batch.num_rows:
                yield _assign_batch(batch, shipped(), nearest, radius, max_cells, keep_vectors)

    return vectors.select(ID, VEC).mapInArrow(run, schema)


def _assign_batch(
    batch: Any, centroids: Centroids, nearest: int, radius: float | None, max_cells: int, keep: str | None
) -> Any:
    """One Arrow batch of :func:`assign`'s output (executor side)."""
    import numpy as np
    import pyarrow as pa

    from user_spark.embedding.storage import to_arrow
    from user_spark.ops.blocks import unit_rows

    x = unit_rows(vector_matrix(batch.column(VEC)))
    if radius is None:
        labels, sims = centroids.nearest(x, nearest)
        rows = np.repeat(np.arange(len(x)), labels.shape[1])
        ranks = np.tile(np.arange(labels.shape[1], dtype=np.int8), len(x))
        labels, sims = labels.reshape(-1), sims.reshape(-1)
    else:
        rows, labels, sims, ranks = centroids.within(x, radius, max_cells=max_cells)
    arrays = [
        batch.column(ID).take(pa.array(rows)),
        pa.array(labels, type=pa.int32()),
        pa.array(ranks, type=pa.int8()),
        pa.array(sims, type=pa.float32()),
    ]
    names = [ID, CELL, RANK, SIM]
    if keep is not None:
        arrays.append(to_arrow(x[rows], np.ones(len(rows), dtype=bool), keep))  # type: ignore[arg-type]
        names.append(VEC)
    return pa.RecordBatch.from_arrays(arrays, names=names)
