"""The UDF and with_embeddings on local Spark: parity, rows, roles, one load per worker, errors before work."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needs_arrow_udf, sentence_transformers_reference
from jobgroup import jobs_started
from pyspark.errors import PythonException

from user_spark import ColumnError, ModelSourceError, OptionError, RoleError, embed_udf, with_embeddings

TOL = 1e-5


def text_frame(spark, texts, partitions=3, nulls_every=0):
    rows = [(i, None if nulls_every and i % nulls_every == 0 else t) for i, t in enumerate(texts)]
    return spark.createDataFrame(rows, "id long, text string").repartition(partitions)


def by_id(rows, column):
    return {r["id"]: r[column] for r in rows}


def stack(mapping, ids):
    return np.array([mapping[i] for i in ids], dtype=np.float32)


def test_real_minilm_on_spark_equals_sentence_transformers(spark, minilm_model, ru_texts):
    udf = embed_udf(minilm_model, role="passage")
    rows = text_frame(spark, ru_texts, partitions=4).withColumn("e", udf("text")).collect()
    got = by_id(rows, "e")
    ref = sentence_transformers_reference(minilm_model, ru_texts, "passage: ")
    assert np.abs(stack(got, range(len(ru_texts))) - ref).max() < TOL
    assert udf.metrics.rows == len(ru_texts) and udf.metrics.truncated >= 3


@pytest.mark.slow
def test_user_base_architecture_on_spark_equals_sentence_transformers(spark, user_base_model, ru_texts):
    texts = ru_texts[:16]
    df = with_embeddings(text_frame(spark, texts, partitions=2), {"text": "query"}, model=user_base_model)
    rows = df.collect()
    got = stack(by_id(rows, "text_embedding"), range(len(texts)))
    assert got.shape == (16, 768)
    ref = sentence_transformers_reference(user_base_model, texts, "query: ")
    assert np.abs(got - ref).max() < TOL


def test_rows_nulls_and_order_are_kept(spark, tiny_model, ru_texts):
    df = spark.createDataFrame([(i, None if i % 5 == 0 else t) for i, t in enumerate(ru_texts)], "id long, text string")
    out = df.withColumn("e", embed_udf(tiny_model)("text")).collect()
    assert [r.id for r in out] == list(range(len(ru_texts)))  # same rows, same order
    assert all((r.e is None) == (r.id % 5 == 0) for r in out)
    assert all(len(r.e) == 64 for r in out if r.e is not None)


def test_result_does_not_depend_on_partitioning_or_arrow_batch_size(spark, tiny_model, ru_texts):
    udf = embed_udf(tiny_model, role="passage")
    results = []
    for partitions, batch in [(1, 1000), (5, 3), (2, 1)]:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch))
        try:
            rows = text_frame(spark, ru_texts, partitions).withColumn("e", udf("text")).collect()
        finally:
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
        results.append(stack(by_id(rows, "e"), range(len(ru_texts))))
    assert np.abs(results[0] - results[1]).max() < TOL
    assert np.abs(results[0] - results[2]).max() < TOL
    budget_udf = embed_udf(tiny_model, role="passage", batch_tokens=40)
    rows = text_frame(spark, ru_texts, 2).withColumn("e", budget_udf("text")).collect()
    assert np.abs(stack(by_id(rows, "e"), range(len(ru_texts))) - results[0]).max() < TOL


def test_roles_add_their_prefixes(spark, tiny_model, ru_texts):
    from pyspark.sql import functions as F

    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    local = Encoder(read_model_spec(tiny_model), tiny_model, choose_device())
    texts = ru_texts[:12]
    df = text_frame(spark, texts).withColumn("body", F.col("text"))
    df = with_embeddings(df, {"text": "query", "body": "passage"}, model=tiny_model)
    rows = df.collect()
    q = stack(by_id(rows, "text_embedding"), range(12))
    p = stack(by_id(rows, "body_embedding"), range(12))
    assert np.abs(q - local.embed(texts, "query: ").vectors).max() < TOL
    assert np.abs(p - local.embed(texts, "passage: ").vectors).max() < TOL


def test_column_metadata_names_the_weights_of_a_local_folder(spark, tiny_model, tmp_path):
    import hashlib
    import pathlib

    df = with_embeddings(text_frame(spark, ["текст"]), {"text": "passage"}, model=tiny_model)
    meta = df.schema["text_embedding"].metadata["user_spark"]
    weights = hashlib.sha256(pathlib.Path(tiny_model, "model.safetensors").read_bytes()).hexdigest()
    expected = "sha256:" + hashlib.sha256(b"model.safetensors\0" + weights.encode()).hexdigest()[:16]
    assert meta == {
        "model": tiny_model, "revision": expected, "role": "passage", "prompt": "passage: ", "default_role": None,
        "dimension": 64, "normalized": True, "storage": "float32",
    }
    df.write.parquet(str(tmp_path / "out"))
    assert spark.read.parquet(str(tmp_path / "out")).schema["text_embedding"].metadata["user_spark"] == meta


def test_dotted_column_names_are_names_not_struct_paths(spark, tiny_model):
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(1, "текст", "passage")], "`doc.id` long, `body.text` string, `the.role` string")
    out = with_embeddings(df, {"body.text": "passage"}, model=tiny_model)
    assert out.columns == ["doc.id", "body.text", "the.role", "body.text_embedding"]
    assert out.schema["body.text_embedding"].metadata["user_spark"]["role"] == "passage"
    per_row = with_embeddings(df, {"body.text": F.col("`the.role`")}, model=tiny_model).first()
    assert per_row["body.text_embedding"] == out.first()["body.text_embedding"]


def test_per_row_roles(spark, tiny_model, ru_texts):
    from pyspark.sql import functions as F

    texts = ru_texts[:20]
    df = spark.createDataFrame(
        [(i, t, ["query", "passage", None][i % 3]) for i, t in enumerate(texts)], "id long, text string, kind string"
    ).repartition(3)
    mixed = by_id(df.withColumn("e", embed_udf(tiny_model, role="passage")("text", "kind")).collect(), "e")
    via_with = by_id(
        with_embeddings(df, {"text": F.col("kind")}, model=tiny_model, role="passage").collect(), "text_embedding"
    )
    q = by_id(df.withColumn("e", embed_udf(tiny_model, role="query")("text")).collect(), "e")
    p = by_id(df.withColumn("e", embed_udf(tiny_model, role="passage")("text")).collect(), "e")
    for i in range(20):
        expected = q[i] if i % 3 == 0 else p[i]  # null role -> the UDF's role (passage)
        assert np.abs(np.array(mixed[i]) - np.array(expected)).max() < TOL
        assert np.abs(np.array(via_with[i]) - np.array(expected)).max() < TOL


def test_unknown_per_row_role_fails_the_job_naming_valid_roles(spark, tiny_model):
    df = spark.createDataFrame([("текст", "summary")], "text string, kind string")
    valid = r"Unknown role 'summary'; valid roles for this model: \['passage', 'query'\]"
    with pytest.raises(PythonException, match=valid):
        df.withColumn("e", embed_udf(tiny_model)("text", "kind")).collect()


@pytest.mark.parametrize("udf_type", [pytest.param("arrow", marks=needs_arrow_udf), "pandas"])
def test_model_loads_once_per_python_worker_across_many_tasks(spark, tiny_model, ru_texts, udf_type):
    import os

    import pandas as pd
    import pyarrow as pa
    from pyspark.sql.functions import pandas_udf

    def loads_in_this_worker(n):
        from user_spark.runtime import worker as _worker

        events = [e for e in _worker.load_events() if e[1] == tiny_model]
        return [f"{os.getpid()}:{len(events)}"] * n

    # The probe must be the same UDF kind as the embedding UDF: Spark runs each kind in its own worker.
    if udf_type == "arrow":
        from pyspark.sql.functions import arrow_udf

        probe = arrow_udf(lambda texts: pa.array(loads_in_this_worker(len(texts))), "string")
    else:
        probe = pandas_udf(lambda texts: pd.Series(loads_in_this_worker(len(texts))), "string")
    df = text_frame(spark, ru_texts * 2, partitions=16)
    out = with_embeddings(df, {"text": "query"}, model=tiny_model, output_columns={"text": "a"}, udf_type=udf_type)
    out = with_embeddings(out, {"text": "passage"}, model=tiny_model, output_columns={"text": "b"}, udf_type=udf_type)
    rows = out.select("a", "b", probe("text").alias("probe")).collect()
    assert all(r.a is not None and r.b is not None for r in rows)
    loads = {}
    for r in rows:
        pid, count = r.probe.split(":")
        loads[pid] = max(loads.get(pid, 0), int(count))
    # 16 tasks ran on a few reused workers; each loaded the model exactly once for both columns. (Not "at most 2":
    # the suite's shared session keeps earlier tests' idle workers in its pool, and a task whose plan has two
    # Python UDF operators holds two workers at once, so a third worker may serve here too.)
    assert set(loads.values()) == {1} and 1 <= len(loads) <= 4


@needs_arrow_udf
def test_pandas_and_arrow_udfs_give_the_same_rows(spark, tiny_model, ru_texts):
    df = text_frame(spark, ru_texts, partitions=3, nulls_every=6)
    arrow = by_id(df.withColumn("e", embed_udf(tiny_model, udf_type="arrow")("text")).collect(), "e")
    pandas = by_id(df.withColumn("e", embed_udf(tiny_model, udf_type="pandas")("text")).collect(), "e")
    assert arrow.keys() == pandas.keys()
    for i in arrow:
        assert (arrow[i] is None) == (pandas[i] is None) == (i % 6 == 0)
        if arrow[i] is not None:
            assert np.abs(np.array(arrow[i]) - np.array(pandas[i])).max() < TOL


def test_metrics_count_rows_nulls_tokens(spark, tiny_model, ru_texts):
    udf = embed_udf(tiny_model)
    text_frame(spark, ru_texts, nulls_every=4).withColumn("e", udf("text")).write.format("noop").mode(
        "overwrite"
    ).save()
    m = udf.metrics.as_dict()
    assert m["rows"] == len(ru_texts) and m["nulls"] == len(range(0, len(ru_texts), 4))
    assert m["tokens"] > 10 * (m["rows"] - m["nulls"]) and m["truncated"] == 0


def test_metrics_are_complete_after_actions_that_read_every_embedded_row(spark, tiny_model, ru_texts):
    from pyspark.sql import functions as F

    df = text_frame(spark, ru_texts, nulls_every=5)
    for action in (lambda d: d.collect(), lambda d: d.toPandas(), lambda d: d.agg(F.count("e")).first()):
        udf = embed_udf(tiny_model)
        action(df.withColumn("e", udf("text")))
        assert udf.metrics.rows == len(ru_texts)
    udf = embed_udf(tiny_model)
    df.withColumn("e", udf("text")).limit(3).collect()  # stops reading early: partial counts, as documented
    assert 0 <= udf.metrics.rows <= len(ru_texts)


@pytest.mark.parametrize(
    ("columns", "error", "message"),
    [
        ({"missing": "query"}, ColumnError, r"Column 'missing' not found; available: \['id', 'text', 'n'\]"),
        ({"n": "query"}, ColumnError, r"Column 'n' is bigint, but the text column must be a string; cast it first"),
        (
            {"text": "document"},
            RoleError,
            r"Unknown role 'document'; valid roles for this model: \['passage', 'query'\]",
        ),
        ({"text": 3}, OptionError, r"must be a role name or a Column"),
    ],
)
def test_bad_columns_and_roles_fail_on_the_driver_before_any_job(spark, tiny_model, columns, error, message):
    df = spark.createDataFrame([(1, "текст", 5)], "id long, text string, n long")
    with pytest.raises(error, match=message), jobs_started(spark) as jobs:
        with_embeddings(df, columns, model=tiny_model)
    assert jobs == []


def test_existing_output_column_is_not_overwritten(spark, tiny_model):
    df = spark.createDataFrame([("a", "b")], "text string, text_embedding string")
    with pytest.raises(ColumnError, match="Output column 'text_embedding' already exists; pass suffix="):
        with_embeddings(df, ["text"], model=tiny_model)


def test_model_folder_problems_fail_on_the_driver(spark, tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match="No weights in"):
        embed_udf(str(broken))
    with pytest.raises(ModelSourceError, match="No such folder: /no/such/model"):
        embed_udf("/no/such/model")
    with pytest.raises(OptionError, match="batch_tokens must be a positive integer, got 0"):
        embed_udf(tiny_model, batch_tokens=0)
    with pytest.raises(OptionError, match="device must be"):
        embed_udf(tiny_model, device="tpu")


@pytest.mark.parametrize("udf_type", [pytest.param("arrow", marks=needs_arrow_udf), "pandas"])
def test_non_string_column_given_to_the_udf_directly_names_the_fix(spark, tiny_model, udf_type):
    df = spark.createDataFrame([(1,)], "n long")
    with pytest.raises(
        Exception, match=r"embed_udf needs a string text column, got bigint values; cast the column to string"
    ):
        df.withColumn("e", embed_udf(tiny_model, udf_type=udf_type)("n")).collect()


def test_empty_dataframe(spark, tiny_model):
    df = spark.createDataFrame([], "id long, text string")
    assert with_embeddings(df, ["text"], model=tiny_model).collect() == []
