"""Every job checks what the driver can check (columns, options, the model) before its first Spark job, so a
typo fails in a second, not after embedding a corpus (issue 16 item 2)."""

from __future__ import annotations

import pytest
from jobgroup import jobs_started

from user_spark import EmbedMetrics, cluster, dedup, similarity_join
from user_spark.errors import ColumnError, ModelSourceError, OptionError

DOCS = [(1, "Кошка сидит на окне."), (2, "Собака спит у двери."), (3, "Кошка сидит на окне.")]


@pytest.fixture
def docs(spark):
    return spark.createDataFrame(DOCS, "id long, text string")


@pytest.mark.parametrize(
    "run",
    [
        lambda df, model: dedup(df, id_col="id", text_col="text", model=model),
        lambda df, model: cluster(df, id_col="id", text_col="text", k=2, model=model),
        lambda df, model: similarity_join(df, df, left_id_col="id", left_text_col="text", right_text_col="text",
                                          k=1, model=model),
        lambda df, model: similarity_join(df, left_id_col="id", left_text_col="text", k=1, model=model),
    ],
    ids=["dedup", "cluster", "join", "self-join"],
)
def test_a_missing_model_fails_before_any_job(spark, docs, tmp_path, run):
    with pytest.raises(ModelSourceError), jobs_started(spark) as jobs:
        run(docs, str(tmp_path / "no-such-model"))
    assert jobs == []


def test_a_bad_option_in_a_legacy_dict_fails_before_any_job(spark, docs, tiny_model):
    with pytest.warns(DeprecationWarning), pytest.raises(OptionError, match="precision"), jobs_started(spark) as jobs:
        dedup(docs, id_col="id", text_col="text", model=tiny_model, embed_options={"precision": "fastest"})
    assert jobs == []


def test_a_wrong_embedding_column_type_fails_before_any_job(spark, docs):
    for run in (
        lambda: dedup(docs, id_col="id", embedding_col="text"),
        lambda: cluster(docs, id_col="id", embedding_col="text", k=2),
    ):
        with pytest.raises(ColumnError, match="Embedding column 'text' is string"), jobs_started(spark) as jobs:
            run()
        assert jobs == []


def test_join_refuses_vectors_of_another_length_than_the_model_before_embedding(spark, docs, tiny_model):
    # tiny_model embeds 64 values; the right side holds 3-value vectors: refused before the left side is embedded
    right = spark.createDataFrame([(10, [1.0, 0.0, 0.0]), (11, [0.0, 1.0, 0.0])], "pid long, vec array<float>")
    metrics = EmbedMetrics.create(spark)
    with pytest.raises(ColumnError, match="left side's vectors have 64 values and the right side's 3"):
        similarity_join(docs, right, left_id_col="id", right_id_col="pid", left_text_col="text",
                        right_embedding_col="vec", k=1, model=tiny_model, metrics=metrics)
    assert metrics.rows == 0
