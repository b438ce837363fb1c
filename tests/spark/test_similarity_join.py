"""similarity_join on local Spark: exact top-k equals brute force, self-join, min_score, IVF recall, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from jobdata import brute_topk, unit
from pyspark.testing import assertDataFrameEqual

from user_spark import ColumnError, OptionError, similarity_join
from user_spark.cli import main


@pytest.fixture(scope="module")
def sides(spark):
    rng = np.random.default_rng(11)
    left = rng.standard_normal((40, 16)).astype(np.float32)
    right = rng.standard_normal((150, 16)).astype(np.float32)
    right[7] = right[3]  # an exact tie: the smaller id must win
    lids, rids = list(range(40)), [1000 + 3 * j for j in range(150)]
    ldf = spark.createDataFrame([(lids[i], left[i].tolist()) for i in range(40)], "qid long, e array<float>")
    rdf = spark.createDataFrame([(rids[j], right[j].tolist()) for j in range(150)], "pid long, e array<float>")
    return left, lids, right, rids, ldf, rdf


def as_dict(pdf, lcol, rcol):
    out = {}
    for row in pdf.sort_values([lcol, "rank"]).itertuples(index=False):
        out.setdefault(getattr(row, lcol), []).append((getattr(row, rcol), row.score, row.rank))
    return out


def check(got, ref):
    assert set(got) == {k for k, v in ref.items() if v}
    for lid, matches in got.items():
        assert [m[0] for m in matches] == [r for r, _ in ref[lid]]
        np.testing.assert_allclose([m[1] for m in matches], [s for _, s in ref[lid]], atol=1e-5)
        assert [m[2] for m in matches] == list(range(1, len(matches) + 1))


def test_exact_join_equals_brute_force_across_blocks_and_partitionings(sides, monkeypatch):
    import user_spark.pipelines.join as join_module

    left, lids, right, rids, ldf, rdf = sides
    ref = brute_topk(left, lids, right, rids, 5)
    # several right shards, candidates merged across tasks
    first = similarity_join(ldf.repartition(3), rdf, left_id_col="qid", right_id_col="pid", left_embedding_col="e",
                            right_embedding_col="e", k=5, block_rows=16)
    out = first.toPandas()
    assert list(out.columns) == ["qid", "pid", "score", "rank"]
    check(as_dict(out, "qid", "pid"), ref)
    # the right side sent to every task (it fits BROADCAST_BYTES)
    other = similarity_join(ldf.coalesce(1), rdf.repartition(4), left_id_col="qid", right_id_col="pid",
                            left_embedding_col="e", right_embedding_col="e", k=5, block_rows=1000)
    assertDataFrameEqual(first, other)
    # one right shard in shuffled tiles, final top k in the task
    monkeypatch.setattr(join_module, "BROADCAST_BYTES", 0)
    tiled = similarity_join(ldf, rdf.repartition(2), left_id_col="qid", right_id_col="pid", left_embedding_col="e",
                            right_embedding_col="e", k=5)
    assertDataFrameEqual(first, tiled)


def test_self_join_leaves_out_self_and_min_score_filters(sides, spark):
    _, _, right, rids, _, rdf = sides
    out = similarity_join(rdf, left_id_col="pid", left_embedding_col="e", k=3, min_score=0.4, block_rows=40).toPandas()
    assert list(out.columns) == ["pid", "pid_right", "score", "rank"]
    check(as_dict(out, "pid", "pid_right"), brute_topk(right, rids, right, rids, 3, exclude_self=True, min_score=0.4))
    assert (out["score"] >= 0.4).all() and (out["pid"] != out["pid_right"]).all()
    tie = out[out["pid"] == rids[3]]
    assert tie["pid_right"].iloc[0] == rids[7] and tie["score"].iloc[0] == pytest.approx(1.0)


def test_ivf_default_settings_reach_recall_on_clustered_data(spark):
    rng = np.random.default_rng(2)
    centers = unit(rng.standard_normal((30, 32)))
    right = unit(centers[rng.integers(0, 30, 1500)] + 0.35 * rng.standard_normal((1500, 32)) / np.sqrt(32) * 4)
    left = unit(centers[rng.integers(0, 30, 60)] + 0.35 * rng.standard_normal((60, 32)) / np.sqrt(32) * 4)
    ldf = spark.createDataFrame([(i, left[i].tolist()) for i in range(60)], "id long, e array<float>")
    rdf = spark.createDataFrame([(j, right[j].tolist()) for j in range(1500)], "id long, e array<float>")
    out = similarity_join(ldf, rdf, left_id_col="id", left_embedding_col="e", right_embedding_col="e", k=10,
                          method="ivf").toPandas()
    ref = brute_topk(left, list(range(60)), right, list(range(1500)), 10)
    assert len(out) == 600
    got = out.groupby("id")["id_right"].apply(set)
    recall = np.mean([len(got.get(i, set()) & {r for r, _ in ref[i]}) / 10 for i in range(60)])
    assert recall >= 0.95
    few = similarity_join(ldf, rdf, left_id_col="id", left_embedding_col="e", right_embedding_col="e", k=10,
                          method="ivf", nlist=30, nprobe=1).toPandas()
    assert len(few) <= 600  # one list probed: an approximation, yet every row gets candidates
    assert few.groupby("id").size().min() >= 1


def ivf_reference(right_df, left, lids, right, rids, k, nlist, nprobe, exclude_self=False):
    """IVF in numpy with the lists user_spark trains (the same sample, the same k-means), searched by brute
    force within each row's probed lists."""
    from pyspark.sql import functions as F

    from user_spark.ops.blocks import unit_rows
    from user_spark.ops.kmeans import train
    from user_spark.pipelines.kmeans import sample_vectors

    vecs = right_df.select(F.col("id").alias("_id"), F.col("e").alias("_vec"))
    _, sample = sample_vectors(vecs, len(rids), seed=0)
    centroids = train(sample, nlist, seed=0, restarts=1, max_iter=25, two_level_from=1024).centroids
    own = dict(zip(rids, centroids.nearest(unit_rows(right), 1)[0][:, 0].tolist(), strict=True))
    probes = centroids.nearest(unit_rows(left), nprobe)[0]
    sims = unit_rows(left) @ unit_rows(right).T
    out = {}
    for i, lid in enumerate(lids):
        cand = [(-sims[i, j], rids[j]) for j in range(len(rids))
                if own[rids[j]] in probes[i] and not (exclude_self and rids[j] == lid)]
        out[lid] = [(r, -s) for s, r in sorted(cand)[:k]]
    return out


@pytest.mark.parametrize("block_rows", [None, 40])
def test_ivf_equals_a_numpy_ivf_with_the_same_lists_in_one_or_many_shards(spark, block_rows):
    rng = np.random.default_rng(5)
    centers = unit(rng.standard_normal((8, 16)))
    x = unit(centers[rng.integers(0, 8, 300)] + 0.6 * rng.standard_normal((300, 16)) / 4).astype(np.float32)
    ids = [7 * i + 3 for i in range(300)]
    df = spark.createDataFrame([(ids[i], x[i].tolist()) for i in range(300)], "id long, e array<float>").repartition(3)
    out = similarity_join(df, left_id_col="id", left_embedding_col="e", k=4, method="ivf", nlist=12, nprobe=3,
                          block_rows=block_rows).toPandas()
    check(as_dict(out, "id", "id_right"), ivf_reference(df, x, ids, x, ids, 4, 12, 3, exclude_self=True))


def test_float16_vectors_join_like_their_float32_values(spark):
    from user_spark.embedding.storage import to_python

    rng = np.random.default_rng(6)
    x = unit(rng.standard_normal((120, 16))).astype(np.float16)
    half = to_python(x.astype(np.float32), np.ones(120, dtype=bool), "float16")
    df = spark.createDataFrame([(i, half[i], x[i].astype(np.float32).tolist()) for i in range(120)],
                               "id long, h binary, e array<float>")
    for method in ("exact", "ivf"):
        got = similarity_join(df, left_id_col="id", left_embedding_col="h", k=3, method=method, nlist=6, nprobe=6)
        want = similarity_join(df, left_id_col="id", left_embedding_col="e", k=3, method=method, nlist=6, nprobe=6)
        assertDataFrameEqual(got, want, rtol=1e-6)


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_empty_or_all_null_right_side_gives_no_pairs_for_both_methods(spark, sides, method):
    _, _, _, _, ldf, _ = sides
    empty = spark.createDataFrame([], "pid long, e array<float>")
    nulls = spark.createDataFrame([(1, None), (2, None)], "pid long, e array<float>")
    for right in (empty, nulls):
        out = similarity_join(ldf, right, left_id_col="qid", right_id_col="pid", left_embedding_col="e",
                              right_embedding_col="e", method=method)
        assert out.columns == ["qid", "pid", "score", "rank"] and out.count() == 0


def test_sides_of_different_dimensions_are_refused_before_the_join(spark, sides):
    _, _, _, _, ldf, _ = sides
    wide = spark.createDataFrame([(1, [0.5] * 24)], "pid long, e array<float>")
    with pytest.raises(ColumnError, match="left side's vectors have 16 values and the right side's 24"):
        similarity_join(ldf, wide, left_id_col="qid", right_id_col="pid", left_embedding_col="e",
                        right_embedding_col="e")


def test_small_exact_join_runs_few_spark_jobs(spark, sides):
    """One aggregate per side (ids unique, vector lengths, counts) and the join itself: adaptive execution
    runs each shuffle as a job of its own, so 3 + 3 + 2 (the code before tiles ran 16 jobs)."""
    _, _, _, _, ldf, rdf = sides
    sc = spark.sparkContext
    sc.setJobGroup("small-join", "count jobs")
    try:
        similarity_join(ldf, rdf, left_id_col="qid", right_id_col="pid", left_embedding_col="e",
                        right_embedding_col="e", k=3).collect()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    jobs = sc.statusTracker().getJobIdsForGroup("small-join")
    assert len(jobs) <= 8, jobs


def test_tiles_land_one_per_partition_on_spark(spark):
    from pyspark.sql import functions as F

    from user_spark.ops.tiles import partition_keys

    for n in (2, 3, 7):
        rows = [(t, k) for t, k in enumerate(partition_keys(n))]
        df = spark.createDataFrame(rows, "t int, k int").repartition(n, "k")
        assert {(r.t, r.p) for r in df.select("t", F.spark_partition_id().alias("p")).collect()} == {
            (t, t) for t in range(n)}


def test_join_errors(sides):
    _, _, _, _, ldf, rdf = sides
    kw = dict(left_id_col="qid", right_id_col="pid", left_embedding_col="e", right_embedding_col="e")
    with pytest.raises(OptionError, match="k must be a positive integer, got 0"):
        similarity_join(ldf, rdf, k=0, **kw)
    with pytest.raises(OptionError, match="method must be 'exact' or 'ivf', got 'hnsw'"):
        similarity_join(ldf, rdf, method="hnsw", **kw)  # type: ignore[arg-type]
    with pytest.raises(ColumnError, match=r"Id column 'pid' not found; available: \['qid', 'e'\]"):
        similarity_join(ldf, ldf, **kw)
    with pytest.raises(
        OptionError, match=r"right side needs right_text_col= \(a text column to embed\) or right_embedding_col="
    ):
        similarity_join(ldf, rdf, left_id_col="qid", right_id_col="pid", left_embedding_col="e")
    with pytest.raises(ColumnError, match="of the right side must be unique"):
        similarity_join(ldf, rdf.union(rdf.limit(1)), **kw)


def test_cli_join_with_text_roles(spark, tiny_model, tmp_path, capsys):
    from conftest import xquad_sample

    paragraphs, questions = xquad_sample()
    pd.DataFrame({"qid": range(8), "question": [q for q, _ in questions[:8]]}).to_parquet(tmp_path / "q.parquet")
    pd.DataFrame({"pid": [f"p{i}" for i in range(len(paragraphs))], "passage": paragraphs}).to_parquet(
        tmp_path / "p.parquet"
    )
    code = main(
        [
            "join",
            "--left",
            str(tmp_path / "q.parquet"),
            "--right",
            str(tmp_path / "p.parquet"),
            "--output",
            str(tmp_path / "pairs"),
            "--left-id-col",
            "qid",
            "--right-id-col",
            "pid",
            "--left-text-col",
            "question",
            "--right-text-col",
            "passage",
            "--k",
            "3",
            "--model",
            tiny_model,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and f"user-spark join: exact, k=3; {8 + len(paragraphs)} texts embedded, " in printed
    pairs = pd.read_parquet(tmp_path / "pairs")
    assert list(pairs.columns) == ["qid", "pid", "score", "rank"] and len(pairs) == 24
    # the right side was embedded as passage, the left as query: check one score against the encoder
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    enc = Encoder(read_model_spec(tiny_model), tiny_model, choose_device())
    q = enc.embed([questions[0][0]], "query: ").vectors[0]
    p = enc.embed(paragraphs, "passage: ").vectors
    best = int(np.argmax(p @ q))
    top = pairs[(pairs["qid"] == 0) & (pairs["rank"] == 1)].iloc[0]
    assert top["pid"] == f"p{best}" and top["score"] == pytest.approx(float(p[best] @ q), abs=1e-5)
