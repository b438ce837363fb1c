"""dedup on local Spark: groups equal brute-force components, exact duplicates, rules, determinism, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from jobdata import brute_components, planted_duplicates, unit
from pyspark.testing import assertDataFrameEqual

from user_spark import ColumnError, OptionError, dedup
from user_spark.cli import main


@pytest.fixture(scope="module")
def planted(spark):
    x = planted_duplicates()
    ids = [int(i) * 7 % 1000 for i in range(len(x))]  # ids not in row order
    rows = [(ids[i], f"text {i}", x[i].tolist()) for i in range(len(x))]
    return x, ids, spark.createDataFrame(rows, "id long, text string, emb array<float>")


#: k-means with cells of 40 rows (6 cells), every cell allowed and the full margin: every pair at the threshold
#: shares a cell, so the groups must equal the brute force exactly.
EXACT_CELLS = {"method": "kmeans", "cell_rows": 40, "margin": 1.0, "max_cells": 8}
SUMMARY_KEYS = ("rows_in", "exact_duplicates", "near_duplicates", "rows_kept", "groups")


def brute_summary(expected: dict, rows: int) -> dict:
    near = len(expected) - len(set(expected.values()))
    return {"rows_in": rows, "exact_duplicates": 0, "near_duplicates": near, "rows_kept": rows - near,
            "groups": len(set(expected.values()))}


@pytest.mark.parametrize("options", [EXACT_CELLS, {"method": "lsh"}], ids=["kmeans", "lsh"])
def test_groups_are_the_brute_force_components_for_any_partitioning(planted, monkeypatch, options):
    from user_spark.pipelines import blocks as blockjoin
    from user_spark.pipelines import cells

    x, ids, df = planted
    expected = brute_components(x, ids, 0.9)
    assert len(set(expected.values())) >= 15  # the data has many groups, some only joined through a middle row
    results = [dedup(df.repartition(p), id_col="id", embedding_col="emb", threshold=0.9, **options) for p in (1, 3)]
    # big inputs get shuffles sized by their volume: force that path (13 partitions) on the small data
    asked = []
    for module in (blockjoin, cells):
        monkeypatch.setattr(module, "shuffle_partitions", lambda spark, rows, row_bytes: asked.append(rows) or 13)
    results.append(dedup(df.repartition(2), id_col="id", embedding_col="emb", threshold=0.9, **options))
    monkeypatch.undo()
    if options["method"] == "lsh":
        assert len(asked) == 2 and asked[0] == len(ids) * results[-1].bands  # signatures, then vector copies
    else:  # the copies the sample predicts (the sample is every row here)
        assert len(asked) == 1 and asked[0] == round(results[-1].summary["vector_copies_per_row"] * len(ids))
        assert results[-1].summary["cells"] == 6 and results[-1].bands is None
    for res in results:
        groups = res.groups.toPandas()
        assert dict(zip(groups["id"], groups["group_id"], strict=False)) == expected
        assert (groups["representative_id"] == groups["group_id"]).all()  # smallest_id rule
        assert {key: res.summary[key] for key in SUMMARY_KEYS} == brute_summary(expected, len(ids))
        assert res.summary["pairs_found"] >= 75 and res.summary["vector_copies_per_row"] >= 1.0
        kept = res.kept.toPandas()
        assert list(kept.columns) == ["id", "text", "emb"] and len(kept) == res.summary["rows_kept"]
        assert not set(kept["id"]) & {i for i, g in expected.items() if i != g}
    assertDataFrameEqual(results[0].groups, results[1].groups)
    assertDataFrameEqual(results[0].groups, results[2].groups)
    # similarity is the cosine to the representative
    g = results[0].groups.toPandas()
    pos = {i: n for n, i in enumerate(ids)}
    for row in g.itertuples():
        assert row.similarity == pytest.approx(float(x[pos[row.id]] @ x[pos[row.representative_id]]), abs=1e-5)


def test_the_margin_finds_pairs_straddling_two_cells(spark):
    """100 pairs at cosine 0.93 in 8 dimensions, cut into 10 cells: without a margin the pairs whose rows fall in
    two cells are lost; the margin puts such rows in both cells, and the groups are the brute force's again."""
    rng = np.random.default_rng(21)
    a = unit(rng.standard_normal((100, 8)))
    side = rng.standard_normal((100, 8))
    side = unit(side - (side * a).sum(axis=1, keepdims=True) * a)
    x = np.vstack([a, unit(0.93 * a + np.sqrt(1 - 0.93**2) * side)]).astype(np.float32)
    ids = list(range(200))
    df = spark.createDataFrame([(i, x[i].tolist()) for i in ids], "id long, emb array<float>")
    expected = brute_components(x, ids, 0.9)
    cells = {"method": "kmeans", "cell_rows": 20, "max_cells": 10}
    none = dedup(df, id_col="id", embedding_col="emb", threshold=0.9, margin=0.0, **cells)
    assert none.summary["vector_copies_per_row"] == 1.0 and none.summary["cells"] == 10
    assert none.summary["near_duplicates"] < brute_summary(expected, len(ids))["near_duplicates"] - 5
    full = dedup(df, id_col="id", embedding_col="emb", threshold=0.9, margin=1.0, **cells)
    groups = full.groups.toPandas()
    assert dict(zip(groups["id"], groups["group_id"], strict=False)) == expected
    assert full.summary["vector_copies_per_row"] > 1.0


def test_cells_above_the_block_size_are_split_into_sub_blocks(planted):
    x, ids, df = planted
    expected = brute_components(x, ids, 0.9)
    whole = dedup(df, id_col="id", embedding_col="emb", threshold=0.9, **EXACT_CELLS)
    split = dedup(df, id_col="id", embedding_col="emb", threshold=0.9, block_rows=16, **EXACT_CELLS)
    groups = split.groups.toPandas()
    assert dict(zip(groups["id"], groups["group_id"], strict=False)) == expected
    # a cell of ~40 rows and its margin copies cut into sub-blocks of <= 16: each copy meets several blocks,
    # while every pair is still scored
    assert split.summary["vector_copies_per_row"] > 2 * whole.summary["vector_copies_per_row"]
    assert split.summary["pairs_found"] >= whole.summary["pairs_found"]


def test_shuffles_are_sized_by_volume_only_past_the_sessions_partitions(spark):
    from user_spark.pipelines.blocks import PARTITION_BYTES, shuffle_partitions

    default = int(spark.conf.get("spark.sql.shuffle.partitions"))
    assert shuffle_partitions(spark, 1000, 48) is None  # small: left to the session (and adaptive coalescing)
    rows = (default + 5) * PARTITION_BYTES // 48
    assert shuffle_partitions(spark, rows, 48) == default + 5
    assert shuffle_partitions(spark, rows + 1, 48) == default + 6


def test_exact_duplicates_by_normalised_text_and_longest_text_rule(spark):
    rng = np.random.default_rng(3)
    vec = [rng.standard_normal(8).tolist() for _ in range(6)]
    near = (np.array(vec[0]) + 0.01).tolist()
    rows = [
        (1, "Мама мыла раму.", vec[0]),
        (2, "  мама  МЫЛА раму. ", vec[0]),  # exact duplicate of 1, and longer: the one embedded
        (3, "Мама мыла раму, а папа читал газету.", near),  # near duplicate of 1 by vector
        (4, "Совсем другая фраза.", vec[3]),
        (5, None, vec[4]),
        (6, None, vec[4]),  # null text: no exact step, but identical vectors
    ]
    df = spark.createDataFrame(rows, "id int, text string, emb array<double>")
    res = dedup(df, id_col="id", text_col="text", embedding_col="emb", threshold=0.95, representative="longest_text")
    g = res.groups.toPandas().set_index("id").sort_index()
    assert g["group_id"].to_dict() == {1: 1, 2: 1, 3: 1, 5: 5, 6: 5}
    assert g["representative_id"].to_dict() == {1: 3, 2: 3, 3: 3, 5: 5, 6: 5}
    assert g.loc[3, "similarity"] == 1.0 and g.loc[2, "similarity"] == g.loc[1, "similarity"] < 1.0
    assert {key: res.summary[key] for key in SUMMARY_KEYS} == {
        "rows_in": 6, "exact_duplicates": 1, "near_duplicates": 2, "rows_kept": 3, "groups": 2
    }
    assert res.summary["vector_rows"] == 5  # the exact duplicate is not compared by vector
    assert sorted(r.id for r in res.kept.collect()) == [3, 4, 5]


def test_errors_before_any_work(spark, planted):
    _, _, df = planted
    with pytest.raises(OptionError, match=r"threshold must be a cosine in \(0, 1\), got 1.5"):
        dedup(df, id_col="id", embedding_col="emb", threshold=1.5)
    with pytest.raises(ColumnError, match=r"Id column 'key' not found; available: \['id', 'text', 'emb'\]"):
        dedup(df, id_col="key", embedding_col="emb")
    with pytest.raises(ColumnError, match=r"Embedding column 'text' is string, expected array<float>"):
        dedup(df, id_col="id", embedding_col="text")
    with pytest.raises(OptionError, match="longest_text' needs text_col="):
        dedup(df, id_col="id", embedding_col="emb", representative="longest_text")
    with pytest.raises(OptionError, match="representative must be"):
        dedup(df, id_col="id", embedding_col="emb", representative="first")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="bands= and rows_per_band= are settings of method='lsh'"):
        dedup(df, id_col="id", embedding_col="emb", method="kmeans", bands=4, rows_per_band=8)
    with pytest.raises(OptionError, match=r"need 0 <= margin <= 1, cell_rows >= 2 and max_cells >= 1; got 1.5"):
        dedup(df, id_col="id", embedding_col="emb", margin=1.5)
    with pytest.raises(OptionError, match="method must be 'kmeans' or 'lsh', got 'minhash'"):
        dedup(df, id_col="id", embedding_col="emb", method="minhash")  # type: ignore[arg-type]
    dup = df.union(df.limit(1))
    with pytest.raises(
        ColumnError, match=r"Id column 'id' of the input must be unique and not null; found 0 \(2 rows\)"
    ):
        dedup(dup, id_col="id", embedding_col="emb")
    ragged = spark.createDataFrame([(1, [1.0, 0.0]), (2, [1.0])], "id long, emb array<float>")
    with pytest.raises(ColumnError, match=r"vectors of different lengths \(1 to 2\)"):
        dedup(ragged, id_col="id", embedding_col="emb")


def test_cli_dedup_embeds_text_with_the_model(spark, tiny_model, tmp_path, capsys):
    from conftest import prose_sentences

    texts = prose_sentences(30)
    texts += [texts[0].upper(), texts[1] + "  "]  # two exact duplicates
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out"
    assert (
        main(
            [
                "dedup",
                "--input",
                str(tmp_path / "in.parquet"),
                "--output",
                str(out),
                "--id-col",
                "id",
                "--text-col",
                "text",
                "--model",
                tiny_model,
                "--threshold",
                "0.999",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("user-spark dedup: {") and '"exact_duplicates": 2' in printed
    assert "; 30 texts embedded, " in printed and " tokens, 0 truncated, " in printed  # exact copies are not embedded
    kept = pd.read_parquet(out / "kept")
    groups = pd.read_parquet(out / "groups").sort_values("id")
    assert {30, 31} <= set(groups["id"]) and 30 not in set(kept["id"]) and 0 in set(kept["id"])
    assert (out / "summary.json").exists()
    assert (
        main(["dedup", "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o2"), "--id-col", "id"])
        == 2
    )
    assert "needs --text-col (a text column to embed) or --embedding-col" in capsys.readouterr().err


def huge_group(spark):
    """600 near-identical rows (179,700 pairs) and 20 others."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal(16)
    x = base + 0.01 * rng.standard_normal((600, 16))
    others = rng.standard_normal((20, 16))
    rows = [(i, v.tolist()) for i, v in enumerate(np.vstack([x, others]))]
    return spark.createDataFrame(rows, "id long, emb array<double>").repartition(4)


def test_a_dense_group_collapses_to_a_star_without_scoring_its_pairs(spark):
    df = huge_group(spark)
    for block_rows in (None, 64):  # one block, or the core rows cut into ten sub-blocks
        res = dedup(df, id_col="id", embedding_col="emb", threshold=0.95, block_rows=block_rows)
        groups = res.groups.toPandas()
        assert set(groups["id"]) == set(range(600)) and set(groups["group_id"]) == {0}
        assert res.summary["rows_kept"] == 21 and res.summary["star_edges"] == 599
        # the 600 core rows are linked to their leader, never scored against each other: only the 20 other rows
        # meet them (12,000 similarities and their own), where all pairs would be 179,700
        assert res.summary["pairs_scored_per_row"] * 620 < 179_700 / 10
        assert res.summary["vector_copies_per_row"] < 1.5


def test_lsh_finds_one_huge_group_without_emitting_all_its_pairs(spark, monkeypatch):
    """LSH buckets: each Arrow batch of blocks sends a spanning forest of its pairs, not all 179,700."""
    from user_spark.pipelines import blocks as blockjoin

    df = huge_group(spark)
    sent = []
    real = blockjoin.bucket_pairs

    def counting(*args, **kwargs):
        edges, counts = real(*args, **kwargs)
        sent.append(edges.count())
        return edges, counts

    monkeypatch.setattr(blockjoin, "bucket_pairs", counting)
    res = dedup(df, id_col="id", embedding_col="emb", threshold=0.95, block_rows=64, bands=4, rows_per_band=8)
    groups = res.groups.toPandas()
    assert res.method == "lsh" and set(groups["id"]) == set(range(600)) and set(groups["group_id"]) == {0}
    assert res.summary["rows_kept"] == 21
    # Each Arrow batch of blocks sends a spanning forest (fewer edges than its ids); all pairs would be 179,700.
    assert sent and sent[0] < 179_700 / 10
    assert res.summary["pairs_found"] > sent[0] and res.summary["vector_copies_per_row"] > 1
