"""Untrusted model folders through Spark: pickle opt-in on the driver, executor-side load failures by name."""

from __future__ import annotations

import pytest
from conftest import load_encoder
from pyspark.errors import PythonException

from user_spark import ModelSourceError, embed_udf


def test_pickle_weights_load_only_with_opt_in(spark, model_copy, ru_texts):
    import torch
    from safetensors.torch import load_file

    reference = load_encoder(model_copy).embed(ru_texts[:3], "query: ").vectors
    torch.save(load_file(str(model_copy / "model.safetensors")), model_copy / "pytorch_model.bin")
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelSourceError, match=r"pytorch_model.bin.*allow_pickle=True"):
        load_encoder(model_copy)
    with pytest.raises(ModelSourceError, match=r"pytorch_model.bin.*allow_pickle=True"):
        embed_udf(str(model_copy))
    opted_in = load_encoder(model_copy, allow_pickle=True).embed(ru_texts[:3], "query: ").vectors
    assert abs(opted_in - reference).max() < 1e-6


def test_executor_side_load_failure_reaches_the_driver_by_name(spark, model_copy):
    from safetensors.torch import load_file, save_file

    udf = embed_udf(str(model_copy))  # passes the driver's checks; the folder changes before the job runs
    tensors = load_file(str(model_copy / "model.safetensors"))
    del tensors[next(k for k in sorted(tensors) if "intermediate" in k)]
    save_file(tensors, str(model_copy / "model.safetensors"), metadata={"format": "pt"})
    df = spark.createDataFrame([("текст",)], "text string")
    with pytest.raises(PythonException, match=r"do not fit .*config.json: 1 parameters missing"):
        df.withColumn("e", udf("text")).collect()
