"""float16 storage in Spark: the binary column, decode_float16, and the jobs reading it."""

from __future__ import annotations

import numpy as np
import pytest

from user_spark import OptionError, decode_float16, embed_udf, similarity_join, with_embeddings


def test_float16_column_matches_float32_and_feeds_the_jobs(spark, tiny_model, ru_texts):
    df = spark.createDataFrame(list(enumerate(ru_texts[:30])), "id long, text string")
    both = with_embeddings(df, {"text": "query"}, model=tiny_model, output_columns={"text": "e32"}).join(
        with_embeddings(df, {"text": "query"}, model=tiny_model, output_columns={"text": "e16"}, storage="float16")
        .select("id", "e16"), "id",
    )
    assert both.schema["e16"].dataType.simpleString() == "binary"
    assert both.schema["e16"].metadata["user_spark"]["storage"] == "float16"
    rows = both.select("id", "e32", decode_float16("e16")).orderBy("id").toPandas()
    e32, e16 = np.stack(rows["e32"]), np.stack(rows["e16"])
    assert np.abs(e32 - e16).max() < 1e-3
    assert (np.sum(e32 * e16, axis=1) / np.linalg.norm(e16, axis=1)).min() > 0.99999

    # A join on the binary column gives the float32 column's neighbours.
    pairs = {
        col: similarity_join(both, None, left_id_col="id", left_embedding_col=col, k=1).orderBy("id").toPandas()
        for col in ("e32", "e16")
    }
    assert (pairs["e32"]["id_right"] == pairs["e16"]["id_right"]).mean() > 0.9
    assert np.abs(pairs["e32"]["score"] - pairs["e16"]["score"]).max() < 2e-3


def test_embed_udf_float16_and_bad_storage(spark, tiny_model):
    udf = embed_udf(tiny_model, storage="float16")
    out = spark.createDataFrame([("привет",), (None,)], "text string").select(udf("text").alias("e")).collect()
    assert len(out[0].e) == 128 and out[1].e is None
    with pytest.raises(OptionError, match="storage must be"):
        embed_udf(tiny_model, storage="int4")
