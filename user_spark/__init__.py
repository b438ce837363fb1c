"""user_spark: sentence embeddings (deepvk/USER-base and other sentence-transformers models) inside Spark.

>>> from user_spark import embed_udf, with_embeddings
>>> df = with_embeddings(df, {"title": "query", "body": "passage"})  # doctest: +SKIP

Importing this package is cheap: torch and transformers load only on executors (and in the driver only when a
model folder is checked), never at import time.
"""

from __future__ import annotations

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
from .udf import EmbedConfig, embed_udf, with_embeddings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROMPTS",
    "ColumnError",
    "EmbedConfig",
    "EmbedMetrics",
    "EmbeddingError",
    "ModelSourceError",
    "OptionError",
    "RoleError",
    "UserSparkError",
    "__version__",
    "embed_udf",
    "with_embeddings",
]
