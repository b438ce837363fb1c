"""Column names with dots are names, not struct paths, in every job (issue 16 item 8)."""

from __future__ import annotations

import numpy as np

from user_spark import cluster, dedup, similarity_join


def _frame(spark):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(6, 8))
    rows = []
    for i in range(36):  # six groups of six rows: one exact-text duplicate pair each, the rest near copies
        vec = base[i % 6] + (0 if i < 12 else 0.01) * rng.normal(size=8)
        rows.append((i, f"текст {i % 6}" if i < 12 else f"текст {i}", [float(x) for x in vec]))
    return spark.createDataFrame(rows, "`doc.id` long, `body.text` string, `e.vec` array<float>")


def _plain(df):
    return df.withColumnsRenamed({"doc.id": "id", "body.text": "text", "e.vec": "vec"})


def test_dedup_with_dotted_names_equals_dedup_with_plain_ones(spark):
    dotted = _frame(spark)
    a = dedup(dotted, id_col="doc.id", text_col="body.text", embedding_col="e.vec", threshold=0.95)
    b = dedup(_plain(dotted), id_col="id", text_col="text", embedding_col="vec", threshold=0.95)
    assert a.groups.columns == ["doc.id", "group_id", "representative_id", "similarity"]
    assert sorted(a.groups.collect()) == sorted(b.groups.collect())
    assert a.kept.columns == dotted.columns
    assert sorted(r[0] for r in a.kept.collect()) == sorted(r[0] for r in b.kept.collect())
    assert a.summary == b.summary and a.summary["exact_duplicates"] == 6


def test_cluster_and_its_summary_with_dotted_names(spark):
    dotted = _frame(spark)
    a = cluster(dotted, id_col="doc.id", text_col="body.text", embedding_col="e.vec", k=6, seed=1)
    b = cluster(_plain(dotted), id_col="id", text_col="text", embedding_col="vec", k=6, seed=1)
    assert a.assignments.columns == ["doc.id", "cluster_id", "similarity"]
    assert sorted(a.assignments.collect()) == sorted(b.assignments.collect())
    assert a.summary.collect() == b.summary.collect()


def test_join_with_dotted_names(spark):
    dotted = _frame(spark)
    for method in ("exact", "ivf"):
        a = similarity_join(dotted, left_id_col="doc.id", left_embedding_col="e.vec", k=2, method=method, seed=1)
        b = similarity_join(_plain(dotted), left_id_col="id", left_embedding_col="vec", k=2, method=method, seed=1)
        assert a.columns == ["doc.id", "doc.id_right", "score", "rank"]
        assert sorted(a.collect()) == sorted(b.collect())


def test_enrich_with_dotted_names(spark, tiny_model, tmp_path):
    from user_spark import current_embeddings, enrich

    dotted = _frame(spark).drop("e.vec")
    out = str(tmp_path / "enriched")
    first = enrich(dotted.where("`doc.id` < 20"), out, id_col="doc.id", columns={"body.text": "passage"},
                   model=tiny_model)
    second = enrich(dotted, out, id_col="doc.id", columns={"body.text": "passage"}, model=tiny_model)
    assert (first.rows_embedded, second.rows_embedded) == (20, 16)
    table = current_embeddings(spark.read.parquet(out), dotted, id_col="doc.id", columns=["body.text"])
    assert sorted(r["doc.id"] for r in table.collect()) == list(range(36))
    assert "body.text_embedding" in table.columns
