"""The embedding UDF (pandas or Arrow): the Spark side of user_spark.

The driver resolves and checks the model folder, ships it to executors and validates the role before any job
runs (:func:`prepare_embedding`). On executors each Arrow batch goes to
:func:`user_spark.runtime.executor.embed_texts` (this worker's cached model) and comes back as one vector per
row, null for null text.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from user_spark.compat import has_arrow_udf, pyspark_version, require_arrow, scalar_udf, valid_utf8
from user_spark.embedding.columns import column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions, UdfType
from user_spark.embedding.storage import Storage, spark_type, to_arrow, to_python
from user_spark.errors import ColumnError, OptionError, UserSparkError
from user_spark.model.identity import model_identity
from user_spark.model.roles import DEFAULT_ROLE, prefix_for
from user_spark.model.shipping import ModelLocation, Ship, ship_model
from user_spark.model.source import DEFAULT_MODEL
from user_spark.model.spec import ModelSpec, read_model_spec
from user_spark.runtime.executor import EncoderTarget
from user_spark.runtime.settings import Backend, DeviceRequest, Precision

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import Column, SparkSession
    from pyspark.sql.types import DataType

    from user_spark.runtime.encoder import EmbedOutput

__all__ = ["EmbedConfig", "EmbeddingUDF", "active_session", "embed_udf", "prepare_embedding"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """An embedding ready to run: the options, the model folder's spec and where executors find it.

    Built on the driver by :func:`prepare_embedding`; executors receive only its :attr:`target`.

    Attributes:
        options: the :class:`EmbedOptions`.
        spec: what the model folder says about embedding with it.
        location: where executors find the folder.
        revision: the model's identity recorded in output metadata (hub commit, weight-file hash, or the
            user's ``model_revision``).
    """

    options: EmbedOptions
    spec: ModelSpec
    location: ModelLocation
    revision: str | None = None

    def __post_init__(self) -> None:
        prefix_for(self.options.role, self.spec.prompts)

    @property
    def model_name(self) -> str:
        return self.options.model

    @property
    def role(self) -> str:
        return self.options.role

    @property
    def model_revision(self) -> str | None:
        """The revision recorded in output metadata (the name this attribute had before :attr:`revision`)."""
        return self.revision

    def with_role(self, role: str) -> EmbedConfig:
        """The same embedding in another role (checked against the model's prompts)."""
        return dataclasses.replace(self, options=self.options.replace(role=role))

    @property
    def target(self) -> EncoderTarget:
        """What an executor needs to run the model."""
        o = self.options
        return EncoderTarget(
            name=o.model, spec=self.spec, location=self.location, device=o.device, precision=o.precision,
            threads=o.threads, backend=o.backend, batch_tokens=o.batch_tokens, max_batch_rows=o.max_batch_rows,
        )


def active_session(spark: SparkSession | None) -> SparkSession:
    """``spark``, or the active session, or a :class:`UserSparkError` saying how to get one."""
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        raise UserSparkError(
            "No active SparkSession: create one first (SparkSession.builder.getOrCreate()) or pass spark="
        )
    return active


def prepare_embedding(options: EmbedOptions, *, spark: SparkSession | None = None) -> EmbedConfig:
    """Resolve, ship and check ``options.model`` on the driver, before any job; the model's identity is
    computed here, once per folder.

    Raises:
        ModelSourceError: the model cannot be found, fetched or loaded. RoleError: an unknown role.
    """
    session = active_session(spark)
    require_arrow()
    local_dir, location = ship_model(
        session, options.model, ship=options.ship, revision=options.revision, allow_pickle=options.allow_pickle
    )
    spec = read_model_spec(local_dir, prompts=options.prompts, allow_pickle=options.allow_pickle)
    revision = options.model_revision or model_identity(local_dir, spec)
    return EmbedConfig(options=options, spec=spec, location=location, revision=revision)


def _uses_arrow(udf_type: UdfType) -> bool:
    if udf_type == "arrow" and not has_arrow_udf():
        raise OptionError(
            f"udf_type='arrow' needs pyspark >= 4.1 (arrow_udf), this is {'.'.join(map(str, pyspark_version()))}; "
            "use 'pandas' or 'auto'"
        )
    return udf_type == "arrow" or (udf_type == "auto" and has_arrow_udf())


def _check_strings(values: Sequence[Any]) -> None:
    bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
    if bad is not None:
        raise ColumnError(
            f"embed_udf needs a string column, got {type(bad).__name__} values ({bad!r}); cast the column to "
            "string first, e.g. F.col('x').cast('string')"
        )


def _two_columns_at_most(roles: Sequence[Any]) -> None:
    if len(roles) > 1:
        raise UserSparkError(
            f"the embedding UDF takes a text column and optionally a role column; got {1 + len(roles)} columns"
        )


@dataclass(frozen=True)
class _BatchEmbedder:
    """Executor side of one UDF: one Arrow batch of texts (and optional per-row roles) in, vectors out."""

    target: EncoderTarget
    role: str
    storage: Storage
    metrics: EmbedMetrics

    def _prefixes(self, texts: Sequence[Any], roles: Sequence[Any] | None) -> str | list[str]:
        prompts = self.target.spec.prompts
        default = prompts[self.role]
        if roles is None:
            return default
        pairs = zip(texts, roles, strict=True)
        return [default if t is None or r is None else prefix_for(r, prompts) for t, r in pairs]

    def embed(self, texts: list[Any], roles: list[Any] | None) -> EmbedOutput:
        from user_spark.runtime.executor import embed_texts

        out = embed_texts(self.target, texts, self._prefixes(texts, roles))
        nulls = int((~out.valid).sum())
        self.metrics.add(rows=len(texts), nulls=nulls, tokens=out.tokens, truncated=out.truncated,
                         recomputed=out.recomputed)
        return out

    def pandas(self, texts: pd.Series, roles: pd.Series | None) -> pd.Series:
        import pandas as pd

        values = texts.tolist()
        _check_strings(values)
        out = self.embed(values, None if roles is None else roles.tolist())
        series: pd.Series = pd.Series(to_python(out.vectors, out.valid, self.storage), index=texts.index, dtype=object)
        return series

    def arrow(self, texts: pa.Array, roles: pa.Array | None) -> pa.Array:
        """Arrow in, Arrow out: the vectors go back as one buffer with offsets, no per-row Python objects."""
        import pyarrow as pa

        values = texts.to_pylist()
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            _check_strings(values)  # raises for non-string values; all-null columns pass
        out = self.embed(values, None if roles is None else roles.to_pylist())
        return to_arrow(out.vectors, out.valid, self.storage)


def _valid_string(col: str | Column, what: str) -> Column:
    """``col`` with invalid UTF-8 replaced by U+FFFD, or a clear error if it does not hold strings.

    Spark strings are bytes and may hold invalid UTF-8 (a Parquet file written by another tool, a binary cast to
    string); Arrow then fails the whole task before the UDF runs. ``make_valid_utf8`` (or its 3.5 stand-in,
    :func:`~user_spark.compat.valid_utf8`) alone would also turn numbers into strings silently, so the column's
    type is checked first.
    """
    from pyspark.sql import functions as F

    c = column(col) if isinstance(col, str) else col
    kind = F.typeof(c)
    return F.when(kind.startswith("string"), valid_utf8(c)).otherwise(
        F.raise_error(
            F.concat(
                F.lit(f"embed_udf needs a string {what} column, got "),
                kind,
                F.lit(" values; cast the column to string first, e.g. F.col('x').cast('string')"),
            )
        )
    )


class EmbeddingUDF:
    """A vectorized UDF that embeds a string column: ``udf(text_col[, role_col]) -> Column``.

    Calling it wraps the columns (invalid UTF-8 -> U+FFFD, a type check) around the real UDF, :attr:`raw`: a
    scalar pandas UDF, or on pyspark >= 4.1 its Arrow-native twin, which hands the vectors back to Spark as
    one buffer instead of a Python list per row. ``spark.udf.register("embed", udf.raw)`` registers it for SQL.

    Attributes:
        config: the :class:`EmbedConfig`. metrics: its counters (rows, nulls, tokens, truncated).
        raw: the pyspark UDF; ``func``, ``evalType`` and ``returnType`` are its.
    """

    def __init__(self, config: EmbedConfig, metrics: EmbedMetrics) -> None:
        self.config = config
        self.metrics = metrics
        batcher = _BatchEmbedder(config.target, config.role, config.options.storage, metrics)
        use_arrow = _uses_arrow(config.options.udf_type)
        self.raw = _raw_udf(batcher, use_arrow, spark_type(config.options.storage))

    @property
    def storage(self) -> Storage:
        return self.config.options.storage

    @property
    def func(self) -> Any:
        return self.raw.func

    @property
    def evalType(self) -> int:
        return int(self.raw.evalType)

    @property
    def returnType(self) -> DataType:
        return_type: DataType = self.raw.returnType
        return return_type

    def __call__(self, text: str | Column, *roles: str | Column) -> Column:
        _two_columns_at_most(roles)
        col: Column = self.raw(_valid_string(text, "text"), *(_valid_string(r, "role") for r in roles))
        return col.alias(f"embed({text})") if isinstance(text, str) else col


def _raw_udf(batcher: _BatchEmbedder, use_arrow: bool, return_type: DataType) -> Any:
    # No type hints on the inner function on purpose: pyspark infers a UDF's kind from hints and rejects *args
    # there; without hints, arrow_udf / pandas_udf make a scalar UDF, which is what this is.
    if use_arrow:

        def embed_arrow(texts, *roles):  # type: ignore[no-untyped-def]
            _two_columns_at_most(roles)
            return batcher.arrow(texts, roles[0] if roles else None)

        return scalar_udf(embed_arrow, return_type, arrow=True)

    def embed_pandas(texts, *roles):  # type: ignore[no-untyped-def]
        _two_columns_at_most(roles)
        return batcher.pandas(texts, roles[0] if roles else None)

    return scalar_udf(embed_pandas, return_type, arrow=False)


def embed_udf(
    model: str = DEFAULT_MODEL,
    *,
    role: str = DEFAULT_ROLE,
    batch_tokens: int | None = None,
    max_batch_rows: int | None = None,
    device: DeviceRequest = "auto",
    precision: Precision = "auto",
    threads: int | None = None,
    backend: Backend = "auto",
    prompts: Mapping[str, str] | None = None,
    revision: str | None = None,
    model_revision: str | None = None,
    ship: Ship = "auto",
    allow_pickle: bool = False,
    udf_type: UdfType = "auto",
    storage: Storage = "float32",
    options: EmbedOptions | None = None,
    metrics: EmbedMetrics | None = None,
    spark: SparkSession | None = None,
) -> EmbeddingUDF:
    """A vectorized UDF that embeds a string column with a sentence-transformers model.

    The model loads once per executor Python worker, on the GPU Spark assigned the task (else CPU), and is
    reused by every later batch and task of that worker.

    Args:
        model, role, batch_tokens, ..., storage: the :class:`EmbedOptions` fields (see there): the model
            (hub id, folder or URI), the role every text is prefixed with (``"query"``, ``"passage"``, ...; call
            the UDF with a second column to choose it per row, null there meaning ``role``), batching, device,
            precision, storage (``"float32"`` -> ``array<float>``, ``"float16"`` -> ``binary``).
        options: an :class:`EmbedOptions` to start from; keyword arguments set to other than their defaults
            apply on top of it.
        metrics: counters to update (share one between UDFs); default: new ones, as ``udf.metrics``.
        spark: the session (default: the active one).

    Returns:
        An :class:`EmbeddingUDF`: ``udf(text_col[, role_col]) -> Column`` of ``array<float>`` (L2-normalised
        when the model normalises, as USER-base does), or ``binary`` with ``storage="float16"``.

    Raises:
        UserSparkError: on the driver, for an unknown role, a bad option, or a model that cannot be found,
            fetched or loaded.

    >>> udf = embed_udf("deepvk/USER-base", role="passage")  # doctest: +SKIP
    >>> df.withColumn("body_embedding", udf("body"))          # doctest: +SKIP
    DataFrame[..., body_embedding: array<float>]   # 768 values per row
    """
    given = EmbedOptions(
        model=model, role=role, batch_tokens=batch_tokens, max_batch_rows=max_batch_rows, device=device,
        precision=precision, threads=threads, backend=backend, prompts=prompts, revision=revision,
        model_revision=model_revision, ship=ship, allow_pickle=allow_pickle, udf_type=udf_type, storage=storage,
    )
    if options is not None:  # the keyword arguments that differ from their defaults apply on top of options
        options = options.replace(**given.changes())
    session = active_session(spark)
    config = prepare_embedding(options or given, spark=session)
    return EmbeddingUDF(config, metrics or EmbedMetrics.create(session))
