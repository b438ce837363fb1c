"""UserEmbedder as a Spark ML stage: in a Pipeline, and through save/load."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import prose_sentences

from user_spark import OptionError, RoleError
from user_spark.ml import UserEmbedder


@pytest.fixture(scope="module")
def docs(spark):
    texts = prose_sentences(40)
    return spark.createDataFrame([(i, t, t[:30]) for i, t in enumerate(texts)], "id long, text string, title string")


def test_pipeline_with_kmeans_round_trips_through_save_and_load(spark, tiny_model, docs, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.clustering import KMeans

    pipeline = Pipeline(stages=[
        UserEmbedder(inputCol="text", outputCol="features", model=tiny_model, role="query", outputType="vector"),
        KMeans(k=3, seed=7, distanceMeasure="cosine"),
    ])
    fitted = pipeline.fit(docs)
    before = {r.id: r.prediction for r in fitted.transform(docs).select("id", "prediction").collect()}
    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    stage = loaded.stages[0]
    assert isinstance(stage, UserEmbedder)
    assert stage.getOrDefault("model") == tiny_model and stage.getOrDefault("outputType") == "vector"
    after = {r.id: r.prediction for r in loaded.transform(docs).select("id", "prediction").collect()}
    assert after == before and len(set(before.values())) == 3


def test_the_readme_pipeline_embeds_each_row_once(spark, tiny_model, docs, monkeypatch):
    from pyspark.ml import Pipeline
    from pyspark.ml.clustering import KMeans

    import user_spark.embedding.frame as frame
    from user_spark import EmbedMetrics

    metrics = EmbedMetrics.create(spark)
    real = frame.with_embeddings
    monkeypatch.setattr(frame, "with_embeddings", lambda *a, **k: real(*a, **dict(k, metrics=metrics)))
    pipeline = Pipeline(stages=[
        UserEmbedder(inputCol="text", outputCol="features", model=tiny_model, outputType="vector"),
        KMeans(k=5, seed=7, distanceMeasure="cosine"),
    ])
    fitted = pipeline.fit(docs)
    assert metrics.rows == docs.count()  # KMeans reads its input several times; the stage embeds it once
    features = fitted.stages[0].transform(docs).schema["features"]
    assert features.metadata["ml_attr"] == {"num_attrs": 64}


def test_several_columns_with_their_roles_equal_with_embeddings(spark, tiny_model, docs):
    from user_spark import with_embeddings

    stage = UserEmbedder(
        inputCols=["title", "text"], outputCols=["t", "b"], roles=["query", "passage"], model=tiny_model
    )
    got = {r.id: (r.t, r.b) for r in stage.transform(docs).collect()}
    ref = with_embeddings(docs, {"title": "query", "text": "passage"}, model=tiny_model)
    for r in ref.collect():
        assert np.abs(np.array(got[r.id][0]) - np.array(r.title_embedding)).max() < 1e-5
        assert np.abs(np.array(got[r.id][1]) - np.array(r.text_embedding)).max() < 1e-5


def test_default_output_names_and_array_type(spark, tiny_model, docs):
    out = UserEmbedder(inputCol="text", model=tiny_model).transform(docs)
    assert out.schema["text_embedding"].dataType.simpleString() == "array<float>"


def test_bad_params_are_clear(spark, tiny_model, docs):
    with pytest.raises(OptionError, match="exactly one of inputCol or inputCols"):
        UserEmbedder(model=tiny_model).transform(docs)
    with pytest.raises(OptionError, match="2 input columns, 2 output columns and 1 roles"):
        UserEmbedder(inputCols=["title", "text"], outputCols=["a", "b"], roles=["query"], model=tiny_model).transform(
            docs
        )
    with pytest.raises(RoleError, match="Unknown role 'summary'"):
        UserEmbedder(inputCol="text", role="summary", model=tiny_model).transform(docs)
    with pytest.raises(OptionError, match="outputType must be"):
        UserEmbedder(inputCol="text", outputType="matrix", model=tiny_model).transform(docs)


def test_dotted_output_names_and_streams(spark, tiny_model):
    df = spark.createDataFrame([(1, "текст", "другой")], "id long, `a.text` string, b string")
    out = UserEmbedder(inputCols=["a.text", "b"], outputCols=["doc.vec", "b_vec"], model=tiny_model,
                       outputType="vector").transform(df)
    assert out.columns == ["id", "a.text", "b", "doc.vec", "b_vec"]
    assert out.schema["doc.vec"].metadata["ml_attr"] == {"num_attrs": 64}
    assert len(out.first()["doc.vec"]) == 64

    # a stream is not checkpointed (Spark refuses to run a streaming plan outside writeStream)
    stream = spark.readStream.format("rate").option("rowsPerSecond", 20).load()
    embedded = UserEmbedder(inputCol="text", outputCol="e", model=tiny_model).transform(
        stream.selectExpr("CAST(value AS STRING) AS text")
    )
    assert embedded.isStreaming
    query = embedded.writeStream.format("memory").queryName("user_spark_stream").start()
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    counts = spark.sql("SELECT count(*) AS n, count(e) AS embedded FROM user_spark_stream").first()
    assert counts.n == counts.embedded
