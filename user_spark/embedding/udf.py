"""The embedding UDF (pandas or Arrow) and ``with_embeddings``: the Spark side of user_spark.

The driver resolves and checks the model folder, ships it to executors and validates columns and roles
before any job runs. The executor side is :func:`_embed_values`: it takes this worker's cached encoder
(:mod:`user_spark.runtime.worker`), embeds the Arrow batch and returns one vector per row, null for null text.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from user_spark.runtime.device import PRECISIONS, DeviceRequest, Precision
from user_spark.errors import ColumnError, OptionError, UserSparkError
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.model.source import DEFAULT_MODEL
from user_spark.model.spec import ModelSpec, read_model_spec
from user_spark.model.roles import DEFAULT_ROLE, prefix_for
from user_spark.model.shipping import ModelLocation, Ship, ship_model
from user_spark.embedding.storage import Storage, check_storage, spark_type, to_arrow, to_python

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["EmbedConfig", "embed_udf", "with_embeddings", "prepare_embedding"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """Everything an executor needs to embed: the model's spec and location and the batching options.

    Built on the driver by :func:`prepare_embedding`, pickled into the UDF, read on executors.
    """

    model_name: str
    spec: ModelSpec
    location: ModelLocation
    role: str = DEFAULT_ROLE
    batch_tokens: int | None = None
    max_batch_rows: int | None = None
    device: DeviceRequest = "auto"
    precision: Precision = "auto"
    threads: int | None = None
    backend: str = "auto"
    model_revision: str | None = None

    def __post_init__(self) -> None:
        prefix_for(self.role, self.spec.prompts)
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise OptionError(f"batch_tokens must be a positive number of tokens, got {self.batch_tokens}")
        if self.max_batch_rows is not None and self.max_batch_rows < 1:
            raise OptionError(f"max_batch_rows must be >= 1, got {self.max_batch_rows}")
        if self.precision not in PRECISIONS:
            raise OptionError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.backend not in ("auto", "fast", "transformers"):
            raise OptionError(f"backend must be 'auto', 'fast' or 'transformers', got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"threads must be >= 1, got {self.threads}")
        dev = str(self.device).lower()
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise OptionError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    @property
    def cache_key(self) -> tuple[str, str, str]:
        """Identifies the loaded model in an executor's cache (prompts and batching do not change the model)."""
        return (self.location.kind, self.location.value, self.spec.transformer_subdir)


def _active_session(spark: SparkSession | None) -> SparkSession:
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        raise UserSparkError(
            "No active SparkSession: create one first (SparkSession.builder.getOrCreate()) or pass spark="
        )
    return active


def prepare_embedding(
    model: str = DEFAULT_MODEL,
    *,
    role: str = DEFAULT_ROLE,
    batch_tokens: int | None = None,
    max_batch_rows: int | None = None,
    device: DeviceRequest = "auto",
    precision: Precision = "auto",
    threads: int | None = None,
    backend: str = "auto",
    prompts: Mapping[str, str] | None = None,
    revision: str | None = None,
    ship: Ship = "auto",
    allow_pickle: bool = False,
    model_revision: str | None = None,
    spark: SparkSession | None = None,
) -> EmbedConfig:
    """Resolve, ship and check a model on the driver; the options are :func:`embed_udf`'s.

    ``model_revision`` is what the output columns' metadata records as the model's revision (default: the hub
    commit of a hub model, else ``None``).
    """
    session = _active_session(spark)
    local_dir, location = ship_model(session, model, ship=ship, revision=revision, allow_pickle=allow_pickle)
    spec = read_model_spec(local_dir, prompts=prompts, allow_pickle=allow_pickle)
    return EmbedConfig(
        model_name=model,
        model_revision=model_revision or hub_revision(local_dir),
        spec=spec,
        location=location,
        role=role,
        batch_tokens=batch_tokens,
        max_batch_rows=max_batch_rows,
        device=device,
        precision=precision,
        threads=threads,
        backend=backend,
    )


def hub_revision(folder: str) -> str | None:
    """The commit of a Hugging Face cache snapshot (``.../snapshots/<sha>``); ``None`` for other folders."""
    import os
    import re

    parent, name = os.path.split(os.path.normpath(folder))
    if os.path.basename(parent) == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", name):
        return name
    return None


def _row_prefixes(config: EmbedConfig, texts: list[Any], roles: list[Any]) -> list[str]:
    prompts = config.spec.prompts
    default = prompts[config.role]
    out = []
    for text, role in zip(texts, roles):
        if text is None or role is None:
            out.append(default)
        else:
            out.append(prefix_for(role, prompts))
    return out


def _check_strings(values: list[Any]) -> None:
    bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
    if bad is not None:
        raise ColumnError(
            f"embed_udf needs a string column, got {type(bad).__name__} values ({bad!r}); cast the column to "
            "string first, e.g. F.col('x').cast('string')"
        )


def _embed_values(config: EmbedConfig, metrics: EmbedMetrics, values: list[Any], roles: list[Any] | None) -> Any:
    """Executor side: embed one Arrow batch of texts (and, optionally, per-row roles) -> ``EmbedOutput``."""
    from pyspark import TaskContext

    from user_spark.runtime import faults as _faults

    from user_spark.runtime import worker as _worker
    from user_spark.runtime.device import task_device
    from user_spark.runtime.encoder import describe_failure

    ctx = TaskContext.get()
    partition = ctx.partitionId() if ctx is not None else None
    prefixes: str | list[str] = (
        config.spec.prompts[config.role] if roles is None else _row_prefixes(config, values, roles)
    )
    choice = task_device(config.device, config.precision, config.threads)
    try:
        encoder = _worker.get_encoder(
            config.cache_key, config.spec, config.location.resolve(), choice, config.model_name, config.backend
        )
        out = encoder.embed(values, prefixes, batch_tokens=config.batch_tokens, max_batch_rows=config.max_batch_rows)
    except UserSparkError:
        raise
    except Exception as exc:
        raise describe_failure(config.model_name, choice, partition, exc) from exc
    _faults.maybe_inject_fault(partition)  # test-only; a no-op unless USER_SPARK_TEST_FAULT is set
    nulls = int((~out.valid).sum())
    metrics.add(rows=len(values), nulls=nulls, tokens=out.tokens, truncated=out.truncated)
    if out.truncated:
        logger.warning(
            "%d of %d texts in partition %s were longer than %d tokens and were truncated (model %s)",
            out.truncated, len(values), partition, config.spec.max_seq_length, config.model_name,
        )
    return out


def _embed_pandas(
    config: EmbedConfig, metrics: EmbedMetrics, storage: Storage, texts: pd.Series, roles: pd.Series | None
) -> pd.Series:
    import pandas as pd

    values = texts.tolist()
    _check_strings(values)
    out = _embed_values(config, metrics, values, None if roles is None else roles.tolist())
    return pd.Series(to_python(out.vectors, out.valid, storage), index=texts.index)


def _embed_arrow(config: EmbedConfig, metrics: EmbedMetrics, storage: Storage, texts: Any, roles: Any | None) -> Any:
    """Arrow in, Arrow out: the vectors go back as one buffer with offsets, no per-row Python objects."""
    import pyarrow as pa

    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        _check_strings(texts.to_pylist())  # raises for non-string values; all-null columns pass
    values = texts.to_pylist()
    out = _embed_values(config, metrics, values, None if roles is None else roles.to_pylist())
    return to_arrow(out.vectors, out.valid, storage)


def has_arrow_udf() -> bool:
    """pyspark >= 4.1 has ``arrow_udf``: Arrow batches in and out, without pandas in between."""
    try:
        from pyspark.sql.functions import arrow_udf  # noqa: F401
    except ImportError:
        return False
    return True


def _valid_string(column: str | Column, what: str) -> Column:
    """``column`` with invalid UTF-8 replaced by U+FFFD, or a clear error if it does not hold strings.

    Spark strings are bytes and may hold invalid UTF-8 (a Parquet file written by another tool, a binary cast to
    string); Arrow then fails the whole task before the UDF runs. ``make_valid_utf8`` alone would also turn
    numbers into strings silently, so the column's type is checked first.
    """
    from pyspark.sql import functions as F

    col = F.col(column) if isinstance(column, str) else column
    kind = F.typeof(col)
    return F.when(kind.startswith("string"), F.make_valid_utf8(col)).otherwise(
        F.raise_error(F.concat(
            F.lit(f"embed_udf needs a string {what} column, got "), kind,
            F.lit(" values; cast the column to string first, e.g. F.col('x').cast('string')"),
        ))
    )


def _make_udf(
    config: EmbedConfig, metrics: EmbedMetrics, udf_type: str = "auto", storage: Storage = "float32"
) -> Callable[..., Column]:
    storage = check_storage(storage)
    if udf_type not in ("auto", "arrow", "pandas"):
        raise OptionError(f"udf_type must be 'auto', 'arrow' or 'pandas', got {udf_type!r}")
    use_arrow = udf_type == "arrow" or (udf_type == "auto" and has_arrow_udf())
    if use_arrow and not has_arrow_udf():
        raise OptionError("udf_type='arrow' needs pyspark >= 4.1 (arrow_udf); use 'pandas'")
    embed_batch = _embed_arrow if use_arrow else _embed_pandas

    # No type hints on purpose: pyspark infers a UDF's kind from hints and rejects *args there; without
    # hints, arrow_udf / pandas_udf make a scalar UDF, which is what this is (texts[, roles] -> vectors).
    def embed(texts, *roles):  # type: ignore[no-untyped-def]
        if len(roles) > 1:
            raise UserSparkError(
                f"the embedding UDF takes a text column and optionally a role column; got {1 + len(roles)} columns"
            )
        return embed_batch(config, metrics, storage, texts, roles[0] if roles else None)

    return_type = spark_type(storage)
    if use_arrow:
        from pyspark.sql.functions import arrow_udf

        raw = arrow_udf(embed, returnType=return_type)
    else:
        from pyspark.sql.functions import pandas_udf

        raw = pandas_udf(embed, returnType=return_type)  # type: ignore[call-overload]

    def udf(text: str | Column, *roles: str | Column) -> Column:
        if len(roles) > 1:
            raise UserSparkError(
                f"the embedding UDF takes a text column and optionally a role column; got {1 + len(roles)} columns"
            )
        column = raw(_valid_string(text, "text"), *(_valid_string(r, "role") for r in roles))
        return column.alias(f"embed({text})") if isinstance(text, str) else column

    # What a UDF object offers, for spark.udf.register(name, udf.raw) and introspection.
    udf.raw = raw  # type: ignore[attr-defined]
    udf.func, udf.evalType, udf.returnType = raw.func, raw.evalType, raw.returnType  # type: ignore[attr-defined]
    udf.config = config  # type: ignore[attr-defined]
    udf.metrics = metrics  # type: ignore[attr-defined]
    udf.storage = storage  # type: ignore[attr-defined]
    return udf


def embed_udf(
    model: str = DEFAULT_MODEL,
    *,
    role: str = DEFAULT_ROLE,
    batch_tokens: int | None = None,
    max_batch_rows: int | None = None,
    device: DeviceRequest = "auto",
    precision: Precision = "auto",
    threads: int | None = None,
    backend: str = "auto",
    prompts: Mapping[str, str] | None = None,
    revision: str | None = None,
    ship: Ship = "auto",
    allow_pickle: bool = False,
    udf_type: str = "auto",
    storage: Storage = "float32",
    metrics: EmbedMetrics | None = None,
    spark: SparkSession | None = None,
) -> Callable[..., Column]:
    """A vectorized UDF that embeds a string column with a sentence-transformers model.

    Calling it wraps the columns (invalid UTF-8 -> U+FFFD, a type check) around the real UDF, ``udf.raw``: a
    scalar pandas UDF, or, on pyspark >= 4.1, its Arrow-native twin (``arrow_udf``), which hands the
    vectors back to Spark as one buffer instead of a Python list per row (``udf_type`` chooses).

    The model loads once per executor Python worker, on the GPU Spark assigned the task (else CPU), and is
    reused by every later batch and task of that worker.

    Args:
        model: hub id (default ``deepvk/USER-base``), local folder, or a URI (``hdfs://``, ``s3a://``,
            ``dbfs:/``, ``file:``) of a folder the driver ships to executors (not over Spark Connect: there,
            a mount path with ``ship="never"``).
        role: prompt to prefix every text with: ``"query"`` (``"query: "``, also for symmetric tasks) or
            ``"passage"`` (``"passage: "``), or another prompt name of the model. Call the UDF with a second
            column to choose the role per row (null there means ``role``).
        batch_tokens: tokens per model batch, padding included (default 8192 on CPU, 32768 on GPU).
        max_batch_rows: optional cap on rows per model batch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"auto"`` (fp16 on GPU, exact fp32 on CPU), ``"fast"`` (fp16 on GPU; bf16 on CPUs with
            native bf16, fp32 on others), or one of ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"`` (CPU,
            opt-in: 0.95 mean cosine to fp32 on real weights).
            See docs/BENCHMARKS.md for each mode's speed and quality.
        threads: torch threads per task on CPU (default: the task's ``spark.task.cpus``).
        backend: ``"auto"`` (the fast SDPA path for DeBERTa v1 without relative attention, i.e. USER-base;
            transformers for other models), ``"fast"`` or ``"transformers"``.
        prompts: role -> prefix table replacing the model folder's prompts.
        revision: hub revision.
        ship: ``"auto"``, ``"always"`` or ``"never"`` copy the folder to executors (see :mod:`user_spark.model.shipping`).
        allow_pickle: accept PyTorch pickle (``.bin``) weights; only for folders you trust.
        udf_type: ``"auto"`` (Arrow where pyspark has ``arrow_udf``), ``"arrow"`` or ``"pandas"``.
        storage: ``"float32"`` (``array<float>``) or ``"float16"`` (``binary``: little-endian half floats,
            half the bytes; read back with :func:`user_spark.decode_float16` or ``np.frombuffer(b, "<f2")``).
        metrics: counters to update (share one between UDFs); default: new ones, as ``udf.metrics``.
        spark: the session (default: the active one).

    Returns:
        A UDF, ``udf(text_col[, role_col]) -> Column`` of ``array<float>`` (L2-normalised when the model
        normalises, as USER-base does), or ``binary`` with ``storage="float16"``.
        ``udf.metrics`` counts rows, nulls, tokens and truncated rows (``None`` over Spark Connect, which has
        no accumulators); ``udf.config`` is its configuration.

    Raises:
        UserSparkError: on the driver, for an unknown role, a bad option, or a model that cannot be found,
            fetched or loaded.

    >>> udf = embed_udf("deepvk/USER-base", role="passage")  # doctest: +SKIP
    >>> df.withColumn("body_embedding", udf("body"))          # doctest: +SKIP
    DataFrame[..., body_embedding: array<float>]   # 768 values per row
    """
    session = _active_session(spark)
    config = prepare_embedding(
        model, role=role, batch_tokens=batch_tokens, max_batch_rows=max_batch_rows, device=device,
        precision=precision, threads=threads, backend=backend, prompts=prompts, revision=revision, ship=ship,
        allow_pickle=allow_pickle, spark=session,
    )
    return _make_udf(config, metrics or EmbedMetrics.create(session), udf_type, storage)


def _is_string_type(data_type: Any) -> bool:
    from pyspark.sql.types import CharType, StringType, VarcharType

    return isinstance(data_type, (StringType, VarcharType, CharType))


def check_text_column(df: DataFrame, name: str, what: str = "text") -> None:
    """Raise :class:`ColumnError` unless ``df`` has a string column ``name``."""
    fields = {f.name: f for f in df.schema.fields}
    if name not in fields:
        raise ColumnError(f"Column {name!r} not found; available: {list(fields)}")
    if not _is_string_type(fields[name].dataType):
        raise ColumnError(
            f"Column {name!r} is {fields[name].dataType.simpleString()}, but the {what} column must be a string; "
            f"cast it first: df.withColumn({name!r}, F.col({name!r}).cast('string'))"
        )


def with_embeddings(
    df: DataFrame,
    columns: Mapping[str, str | Column] | Sequence[str],
    *,
    model: str = DEFAULT_MODEL,
    suffix: str = "_embedding",
    output_columns: Mapping[str, str] | None = None,
    metrics: EmbedMetrics | None = None,
    **options: Any,
) -> DataFrame:
    """Add an embedding column for each text column, each with its role; one model load serves them all.

    Args:
        df: the DataFrame.
        columns: text column -> role (``"query"``, ``"passage"``, ...) or a Column holding each row's role;
            a plain list of names embeds them all with the default role ``query``.
        model: as in :func:`embed_udf`.
        suffix: output column name = text column name + suffix.
        output_columns: explicit output names for some text columns.
        metrics: counters (rows, nulls, tokens, truncated) to update once an action runs.
        **options: any other :func:`embed_udf` option (``batch_tokens``, ``device``, ``precision``, ``storage``, ...).

    Returns:
        ``df`` with one ``array<float>`` column per text column (``binary`` with ``storage="float16"``), every
        input row kept in order. Each output column's metadata (``df.schema[name].metadata["user_spark"]``)
        records the model, its revision (hub commit, where known), the role and prompt, the dimension, whether
        vectors are normalised and the storage; Parquet keeps it.

    Raises:
        ColumnError: a missing or non-string column, or an output column that already exists.
        RoleError: an unknown role.

    >>> with_embeddings(df, {"title": "query", "body": "passage"})  # doctest: +SKIP
    DataFrame[id: bigint, title: string, body: string, title_embedding: array<float>, body_embedding: array<float>]
    """
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    mapping: dict[str, str | Column] = (
        dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns, DEFAULT_ROLE)
    )
    if not mapping:
        raise ColumnError("with_embeddings needs at least one text column")
    outputs = {name: (output_columns or {}).get(name, f"{name}{suffix}") for name in mapping}
    existing = set(df.columns)
    for name, role in mapping.items():
        check_text_column(df, name)
        if outputs[name] in existing:
            raise ColumnError(
                f"Output column {outputs[name]!r} already exists; pass suffix= or output_columns= to name it "
                "differently, or drop it first"
            )
        if isinstance(role, Column):
            role_type = df.select(role).schema.fields[0].dataType
            if not _is_string_type(role_type):
                raise ColumnError(f"The role column for {name!r} must hold strings, got {role_type.simpleString()}")
        elif not isinstance(role, str):
            raise OptionError(f"Role for column {name!r} must be a role name or a Column, got {role!r}")
    if len(set(outputs.values())) != len(outputs):
        raise ColumnError(f"Two text columns would write the same output column: {outputs}")

    spark = df.sparkSession
    fixed_roles = {r for r in mapping.values() if isinstance(r, str)}
    default_role = options.pop("role", DEFAULT_ROLE)
    udf_type = options.pop("udf_type", "auto")
    storage = check_storage(options.pop("storage", "float32"))
    base = prepare_embedding(model, role=default_role, spark=spark, **options)
    for role in fixed_roles:
        prefix_for(role, base.spec.prompts)
    metrics = metrics or EmbedMetrics.create(spark)
    udfs: dict[str, Callable[..., Column]] = {}
    for role in fixed_roles:
        udfs[role] = _make_udf(_with_role(base, role), metrics, udf_type, storage)
    result = df
    for name, role in mapping.items():
        if isinstance(role, str):
            column = udfs[role](F.col(name))
        else:
            column = _make_udf(base, metrics, udf_type, storage)(F.col(name), role)
        meta = embedding_metadata(base, role if isinstance(role, str) else None, storage)
        # withMetadata, not alias(metadata=): Spark Connect's withColumn drops an alias's metadata.
        result = result.withColumn(outputs[name], column).withMetadata(outputs[name], meta)
    return result


def embedding_metadata(config: EmbedConfig, role: str | None, storage: Storage) -> dict[str, Any]:
    """What an embedding column holds, for its Spark column metadata (``role=None``: chosen per row)."""
    spec = config.spec
    return {"user_spark": {
        "model": config.model_name,
        "revision": config.model_revision,
        "role": role if role is not None else "per_row",
        "prompt": spec.prompts[role] if role is not None else None,
        "default_role": config.role if role is None else None,
        "dimension": spec.dimension,
        "normalized": spec.normalize,
        "storage": storage,
    }}


def _with_role(config: EmbedConfig, role: str) -> EmbedConfig:
    from dataclasses import replace

    return replace(config, role=role)
