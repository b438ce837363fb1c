"""Hostile rows through Spark: every row comes back (a vector, a null, or a clear error), whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_encoder, raised_error_type
from hostile import HOSTILE, alone, hostile_chars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from user_spark import UserSparkError, embed_udf, with_embeddings
from user_spark.runtime.encoder import valid_unicode

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load_encoder(tiny_model)


def hostile_frame(spark):
    from pyspark.sql import functions as F

    rows = [(i % 7, t) for i, t in enumerate([*HOSTILE, None])]  # duplicate ids on purpose
    df = spark.createDataFrame(rows, "id long, text string")
    # Invalid UTF-8 bytes in a string column (as a Parquet file from another tool may hold): Arrow cannot
    # convert them to Python, so the UDF replaces them with U+FFFD on the JVM side.
    bad = spark.range(1).select(
        F.lit(99).cast("long").alias("id"), F.unhex(F.lit("C328FF41")).cast("string").alias("text")
    )
    return df.unionByName(bad)


@pytest.mark.parametrize("records_per_batch", ["1", "8"])
def test_spark_udf_on_hostile_rows(spark, tiny_model, tiny, records_per_batch):
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", records_per_batch)
    try:
        rows = hostile_frame(spark).withColumn("e", embed_udf(tiny_model)("text")).collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
    expected_texts = [*HOSTILE, None, "�(�A"]
    assert [r.id for r in rows] == [i % 7 for i in range(len(HOSTILE) + 1)] + [99]  # no row lost or reordered
    for row, text in zip(rows, expected_texts, strict=False):
        want = alone(tiny, text)
        if want is None:
            assert row.e is None
        else:
            assert row.text == valid_unicode(text)  # Spark replaced the lone surrogates itself
            assert np.abs(np.asarray(row.e) - want).max() < TOL, repr(text[:20])


def test_single_row_and_all_null_frames(spark, tiny_model, tiny):
    one = spark.createDataFrame([(1, "одна строка")], "id long, text string")
    rows = with_embeddings(one, ["text"], model=tiny_model).collect()
    assert len(rows) == 1 and np.abs(np.asarray(rows[0].text_embedding) - alone(tiny, "одна строка")).max() < TOL
    nulls = spark.createDataFrame([(i, None) for i in range(5)], "id long, text string").repartition(2)
    rows = with_embeddings(nulls, ["text"], model=tiny_model).collect()
    assert sorted(r.id for r in rows) == list(range(5)) and all(r.text_embedding is None for r in rows)


def test_missing_column_and_non_string_role_column_fail_clearly(spark, tiny_model):
    from pyspark.errors import AnalysisException

    df = spark.createDataFrame([("текст", 1)], "text string, kind int")
    udf = embed_udf(tiny_model)
    with pytest.raises(AnalysisException, match="nope"):
        df.withColumn("e", udf("nope"))
    with pytest.raises(raised_error_type(), match="embed_udf needs a string role column, got int values"):
        df.withColumn("e", udf("text", "kind")).collect()
    with pytest.raises(UserSparkError, match="takes a text column and optionally a role column; got 3"):
        udf("text", "kind", "kind")


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(st.one_of(st.none(), st.text(hostile_chars, max_size=40)), min_size=1, max_size=10),
    partitions=st.integers(min_value=1, max_value=3),
)
def test_spark_invariants(spark, tiny_model, tiny, batch, partitions):
    df = spark.createDataFrame(list(enumerate(batch)), "id long, text string").repartition(partitions)
    rows = df.withColumn("e", embed_udf(tiny_model, role="passage")("text")).collect()
    assert sorted(r.id for r in rows) == list(range(len(batch)))
    for row in rows:
        want = alone(tiny, batch[row.id], "passage: ")
        assert (row.e is None) == (want is None)
        if want is not None:
            assert np.abs(np.asarray(row.e) - want).max() < TOL
