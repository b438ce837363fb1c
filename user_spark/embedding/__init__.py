"""The embedding API on the driver: ``EmbedOptions``, the UDF (``EmbeddingUDF``, ``embed_udf``),
``with_embeddings`` and column metadata, the ``UserEmbedder`` ML stage, float16 storage codecs and metrics.

It checks everything it can before a job runs and hands executors a small picklable target
(:mod:`user_spark.runtime`).
"""
