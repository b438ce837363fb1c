"""cluster on local Spark: planted clusters found, k chosen by silhouette, determinism, summary, CLI + PNG."""

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
    assert "user-spark cluster: k=4" in capsys.readouterr().out
    assert len(pd.read_parquet(out / "assignments")) == 200
    assert pd.read_parquet(out / "summary")["size"].sum() == 200
    png = (out / "clusters.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
