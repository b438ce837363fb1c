"""cluster on local Spark: planted clusters found, k chosen by silhouette, determinism, summary, CLI + PNG, and
what a fixed k larger than the rows, or an input without vectors, gets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from jobdata import unit
from pyspark.testing import assertDataFrameEqual

from user_spark import ColumnError, OptionError, cluster
from user_spark.cli import main
from user_spark.cli.cluster import parse_k


@pytest.fixture(scope="module")
def blobs(spark):
    rng = np.random.default_rng(8)
    centers = unit(rng.standard_normal((4, 16)))
    labels = rng.integers(0, 4, 200)
    x = unit(centers[labels] + 0.04 * rng.standard_normal((200, 16)))
    rows = [(int(i), f"текст {labels[i]}-{i}", x[i].tolist()) for i in range(200)]
    return x, labels, spark.createDataFrame(rows, "id long, text string, emb array<float>")


def test_k_chosen_by_silhouette_finds_planted_clusters_deterministically(blobs):
    x, labels, df = blobs
    res = cluster(df.repartition(3), id_col="id", text_col="text", embedding_col="emb", k=range(2, 7), seed=3, top_n=2)
    assert res.k == 4 and max(res.silhouettes, key=res.silhouettes.get) == 4 and set(res.silhouettes) == {2, 3, 4, 5, 6}
    a = res.assignments.toPandas().sort_values("id")
    assert list(a.columns) == ["id", "cluster_id", "similarity"]
    assert len({(p, q) for p, q in zip(labels, a["cluster_id"], strict=False)}) == 4  # same partition as planted
    np.testing.assert_allclose(a["similarity"], (x @ res.centroids.T).max(axis=1), atol=1e-5)
    s = res.summary.toPandas()
    assert s["size"].sum() == 200 and list(s["cluster_id"]) == [0, 1, 2, 3]
    for row in s.itertuples():
        members = a[a["cluster_id"] == row.cluster_id].sort_values(["similarity", "id"], ascending=[False, True])
        assert list(row.nearest) == [f"текст {labels[i]}-{i}" for i in members["id"][:2]]
    again = cluster(df.coalesce(1), id_col="id", embedding_col="emb", k=4, seed=3)
    assertDataFrameEqual(res.assignments, again.assignments, rtol=1e-6)
    assert res.stats["rows"] == 200 and res.stats["vector_copies_per_row"] == 0.0
    assert res.stats["pairs_scored_per_row"] == 4 and 0.9 < res.stats["objective"] <= 1.0


def test_assignments_do_not_depend_on_partitioning_or_shuffle_partitions(spark):
    """No clusters in the data (uniform on the sphere), so many rows sit near a boundary: any dependence on the
    layout would show."""
    rng = np.random.default_rng(12)
    x = unit(rng.standard_normal((400, 6)))
    df = spark.createDataFrame([(f"doc-{i}", x[i].tolist()) for i in range(400)], "id string, emb array<double>")
    runs = []
    for parts, shuffle in ((1, "2"), (7, "3"), (3, "200")):
        spark.conf.set("spark.sql.shuffle.partitions", shuffle)
        try:
            res = cluster(df.repartition(parts), id_col="id", embedding_col="emb", k=9, seed=4, sample_rows=150)
            runs.append((res.assignments.toPandas().sort_values("id"), res.summary.toPandas(), res.centroids))
        finally:
            spark.conf.set("spark.sql.shuffle.partitions", "2")
    first = runs[0]
    assert first[0]["cluster_id"].nunique() == 9
    for other in runs[1:]:
        assert other[0]["id"].tolist() == first[0]["id"].tolist()
        assert other[0]["cluster_id"].tolist() == first[0]["cluster_id"].tolist()
        assert other[0]["similarity"].tolist() == first[0]["similarity"].tolist()
        assert np.array_equal(other[2], first[2])
        assert [list(n) for n in other[1]["nearest"]] == [list(n) for n in first[1]["nearest"]]


def test_fixed_k_above_the_rows_is_refused_and_few_distinct_vectors_clamp_k(spark, tmp_path, capsys):
    rows = [(i, [1.0, float(i % 30), 0.5]) for i in range(40)]  # 40 rows, 30 distinct vectors
    df = spark.createDataFrame(rows, "id long, emb array<float>")
    with pytest.raises(OptionError, match=r"k=100 needs at least that many rows with a vector; the input has 40 .*"
                                          r"Ask for k <= 40"):
        cluster(df, id_col="id", embedding_col="emb", k=100)
    with pytest.raises(OptionError, match=r"k up to 50 needs at least that many rows"):
        cluster(df, id_col="id", embedding_col="emb", k=range(2, 51))
    res = cluster(df, id_col="id", embedding_col="emb", k=35, seed=1)
    assert res.k == 30 and res.centroids.shape == (30, 3) and res.stats["k_requested"] == 35
    assert res.summary.count() == 30 and res.assignments.select("cluster_id").distinct().count() == 30
    df.write.parquet(str(tmp_path / "in"))
    assert main(["cluster", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--id-col", "id",
                 "--embedding-col", "emb", "--k", "35", "--no-plot"]) == 0
    assert "user-spark cluster: k=30 (asked 35: the sample holds only 30 distinct vectors); 40 rows" in (
        capsys.readouterr().out)
    assert pd.read_parquet(tmp_path / "out" / "summary")["cluster_id"].nunique() == 30


def test_empty_or_all_null_input_is_refused_with_a_clear_error(spark):
    empty = spark.createDataFrame([], "id long, emb array<float>")
    with pytest.raises(ColumnError, match="cluster found no rows with a vector: the input is empty or its embedding "
                                          "column 'emb' is null in every row"):
        cluster(empty, id_col="id", embedding_col="emb", k=3)
    nulls = spark.createDataFrame([(1, None), (2, None)], "id long, emb array<float>")
    with pytest.raises(ColumnError, match="no rows with a vector"):
        cluster(nulls, id_col="id", embedding_col="emb", k=2)


def test_cluster_errors(blobs):
    _, _, df = blobs
    with pytest.raises(OptionError, match=r"k must be an integer >= 2 or a range"):
        cluster(df, id_col="id", embedding_col="emb", k=1)
    with pytest.raises(ColumnError, match="Column 'title' not found"):
        cluster(df, id_col="id", text_col="title", embedding_col="emb")
    with pytest.raises(OptionError, match=r"cluster needs text_col= .* or embedding_col="):
        cluster(df, id_col="id")
    assert parse_k("5:30:5") == range(5, 31, 5) and parse_k("7") == 7
    with pytest.raises(OptionError, match="--k expects"):
        parse_k("a:b")


def test_cli_cluster_writes_parquet_and_a_png(spark, blobs, tmp_path, capsys):
    _, _, df = blobs
    df.write.parquet(str(tmp_path / "in"))
    out = tmp_path / "out"
    assert main(["cluster", "--input", str(tmp_path / "in"), "--output", str(out), "--id-col", "id",
                 "--embedding-col", "emb", "--text-col", "text", "--k", "4"]) == 0
    printed = capsys.readouterr().out
    assert "user-spark cluster: k=4; 200 rows, k-means on 200 sampled (mean cosine to centroid 0.9" in printed
    assert "4 centroids compared per row, 0 vector copies shuffled" in printed
    assert len(pd.read_parquet(out / "assignments")) == 200
    assert pd.read_parquet(out / "summary")["size"].sum() == 200
    png = (out / "clusters.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
