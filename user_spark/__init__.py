"""user_spark: sentence embeddings (deepvk/USER-base and other sentence-transformers models) inside Spark.

>>> from user_spark import embed_udf, with_embeddings
>>> df = with_embeddings(df, {"title": "query", "body": "passage"})  # doctest: +SKIP
>>> from user_spark import dedup, cluster, similarity_join   # jobs on the embeddings

Importing this package is cheap: torch and transformers load only on executors (and in the driver only when a
model folder is checked), never at import time. The layers, top to bottom: ``cli`` -> ``pipelines`` ->
``embedding`` -> ``runtime`` -> ``model`` -> ``ops`` (README, "Architecture").
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from user_spark.embedding.frame import with_embeddings
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions
from user_spark.embedding.storage import decode_float16
from user_spark.embedding.udf import EmbedConfig, EmbeddingUDF, embed_udf
from user_spark.errors import (
    ColumnError,
    EmbeddingError,
    ModelSourceError,
    OptionError,
    OutputBusyError,
    RoleError,
    UserSparkError,
)
from user_spark.model.roles import DEFAULT_PROMPTS
from user_spark.model.source import DEFAULT_MODEL
from user_spark.pipelines.cluster import ClusterResult, cluster
from user_spark.pipelines.dedup import DedupResult, dedup
from user_spark.pipelines.enrich import (
    CompactResult,
    EnrichResult,
    compact_embeddings,
    current_embeddings,
    enrich,
)
from user_spark.pipelines.join import similarity_join
from user_spark.pipelines.staging import Staging, staging

try:
    __version__ = version("user-spark")
except PackageNotFoundError:  # imported from a source tree or a --py-files zip, not an installed distribution
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROMPTS",
    "ClusterResult",
    "ColumnError",
    "CompactResult",
    "DedupResult",
    "EmbedConfig",
    "EmbedMetrics",
    "EmbedOptions",
    "EmbeddingError",
    "EmbeddingUDF",
    "EnrichResult",
    "ModelSourceError",
    "OptionError",
    "OutputBusyError",
    "RoleError",
    "Staging",
    "UserSparkError",
    "__version__",
    "cluster",
    "compact_embeddings",
    "current_embeddings",
    "decode_float16",
    "dedup",
    "embed_udf",
    "enrich",
    "similarity_join",
    "staging",
    "with_embeddings",
]
