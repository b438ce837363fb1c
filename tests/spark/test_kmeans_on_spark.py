"""k-means on Spark (pipelines/kmeans.py): the sample and the assignments do not depend on partitioning."""

from __future__ import annotations

import numpy as np
from jobdata import unit
from pyspark.sql.types import LongType, StringType

from user_spark.ops.kmeans import train
from user_spark.pipelines.kmeans import assign, fit_kmeans, sample_vectors


def frame(spark, x: np.ndarray, ids: list):
    rows = [(ids[i], x[i].tolist()) for i in range(len(x))]
    kind = "string" if isinstance(ids[0], str) else "long"
    return spark.createDataFrame(rows, f"_id {kind}, _vec array<float>")


def test_sample_and_fit_are_the_same_for_any_partitioning(spark):
    rng = np.random.default_rng(1)
    x = unit(rng.standard_normal((300, 12))).astype(np.float32)
    df = frame(spark, x, [int(i) * 13 % 1000 for i in range(300)])
    ids_a, sample_a = sample_vectors(df.repartition(1), 100, seed=4)
    ids_b, sample_b = sample_vectors(df.repartition(5), 100, seed=4, total=300)
    assert len(ids_a) == 100 and ids_a.tolist() == ids_b.tolist() and np.array_equal(sample_a, sample_b)
    assert sample_vectors(df, 100, seed=5)[0].tolist() != ids_a.tolist()  # the seed picks other rows
    everything, _ = sample_vectors(df, 1000, seed=4)
    assert sorted(everything.tolist()) == sorted(int(i) * 13 % 1000 for i in range(300))
    fit = fit_kmeans(df.repartition(3), 5, seed=4, sample_rows=100, restarts=2)
    assert np.array_equal(fit.centroids.vectors, train(sample_a, 5, seed=4, restarts=2).centroids.vectors)


def test_assign_nearest_and_within_radius_as_numpy_does(spark):
    rng = np.random.default_rng(2)
    x = unit(rng.standard_normal((200, 8))).astype(np.float32)
    ids = [f"row-{i:03d}" for i in range(200)]
    df = frame(spark, x, ids)
    centroids = train(x, 6, seed=0).centroids
    got = assign(df.repartition(3), centroids, id_type=StringType(), nearest=2).toPandas()
    labels, sims = centroids.nearest(x, 2)
    got = got.sort_values(["_id", "_rank"])
    assert got["_cell"].tolist() == labels.reshape(-1).tolist() and got["_rank"].tolist() == [0, 1] * 200
    np.testing.assert_allclose(got["_sim"], sims.reshape(-1), atol=1e-6)
    within = assign(df.repartition(2), centroids, id_type=StringType(), radius=0.2, max_cells=3,
                    keep_vectors="float16").toPandas().sort_values(["_id", "_rank"])
    rows, cells, _, ranks = centroids.within(x, 0.2, max_cells=3)
    assert within["_cell"].tolist() == cells.tolist() and within["_rank"].tolist() == ranks.tolist()
    assert within["_id"].tolist() == [ids[r] for r in rows]
    half = np.stack([np.frombuffer(v, dtype="<f2") for v in within["_vec"]]).astype(np.float32)
    np.testing.assert_allclose(half, x[rows], atol=1e-3)
    # assignments are the same whatever the partitioning
    again = assign(df.repartition(7), centroids, id_type=StringType(), radius=0.2, max_cells=3).toPandas()
    assert again.sort_values(["_id", "_rank"])["_cell"].tolist() == cells.tolist()


def test_sample_of_an_empty_frame(spark):
    empty = spark.createDataFrame([], "_id long, _vec array<float>")
    ids, matrix = sample_vectors(empty, 10, seed=0)
    assert len(ids) == 0 and matrix.shape[0] == 0
    assert assign(empty, train(np.eye(2, dtype=np.float32), 2).centroids, id_type=LongType()).count() == 0
