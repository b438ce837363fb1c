"""``from user_spark.ml import UserEmbedder``: the Spark ML stage (defined in :mod:`user_spark.embedding.ml`).

A module of its own, not a name in ``user_spark``: it imports ``pyspark.ml`` at import time.
"""

from __future__ import annotations

from user_spark.embedding.ml import UserEmbedder

__all__ = ["UserEmbedder"]
