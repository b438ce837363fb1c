"""user_spark: sentence embeddings (deepvk/USER-base and other sentence-transformers models) inside Spark.

>>> from user_spark import embed_udf, with_embeddings
>>> df = with_embeddings(df, {"title": "query", "body": "passage"})  # doctest: +SKIP
>>> from user_spark import dedup, cluster, similarity_join   # jobs on the embeddings

Importing this package is cheap: torch and transformers load only on executors (and in the driver only when a
model folder is checked), never at import time.
"""

from __future__ import annotations

from .cluster import ClusterResult, cluster
from .dedup import DedupResult, dedup
from .enrich import EnrichResult, current_embeddings, enrich
from .errors import (
    ColumnError,
    EmbeddingError,
    ModelSourceError,
    OptionError,
    RoleError,
    UserSparkError,
)
from .metrics import EmbedMetrics
from .model_source import DEFAULT_MODEL
from .roles import DEFAULT_PROMPTS
from .similarity_join import similarity_join
from .storage import decode_float16
from .udf import EmbedConfig, embed_udf, with_embeddings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROMPTS",
    "ClusterResult",
    "ColumnError",
    "DedupResult",
    "EnrichResult",
    "EmbedConfig",
    "EmbedMetrics",
    "EmbeddingError",
    "ModelSourceError",
    "OptionError",
    "RoleError",
    "UserSparkError",
    "__version__",
    "cluster",
    "current_embeddings",
    "decode_float16",
    "dedup",
    "embed_udf",
    "enrich",
    "similarity_join",
    "with_embeddings",
]
