"""``with_embeddings``: embedding columns added to a DataFrame, each text column in its role, one model load.

Each output column carries Spark metadata saying what it holds (model, revision, role, prompt, dimension,
storage), which Parquet keeps and :func:`user_spark.enrich` checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from user_spark.embedding.columns import check_text_column, column, is_string_type, with_named_column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedKwargs, EmbedOptions
from user_spark.embedding.udf import EmbedConfig, EmbeddingUDF, prepare_embedding
from user_spark.errors import ColumnError, OptionError
from user_spark.model.roles import DEFAULT_ROLE

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from typing_extensions import Unpack

__all__ = ["embedding_metadata", "with_embeddings"]

RoleSpec = Any  # a role name (str) or a pyspark Column of role names


def _plan(
    df: DataFrame, columns: Mapping[str, RoleSpec] | Sequence[str], suffix: str,
    output_columns: Mapping[str, str] | None,
) -> tuple[dict[str, RoleSpec], dict[str, str]]:
    """Check the text columns, roles and output names on the driver: ``(text -> role, text -> output)``."""
    from pyspark.sql import Column

    mapping: dict[str, RoleSpec] = (
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
            if not is_string_type(role_type):
                raise ColumnError(f"The role column for {name!r} must hold strings, got {role_type.simpleString()}")
        elif not isinstance(role, str):
            raise OptionError(f"Role for column {name!r} must be a role name or a Column, got {role!r}")
    if len(set(outputs.values())) != len(outputs):
        raise ColumnError(f"Two text columns would write the same output column: {outputs}")
    return mapping, outputs


def with_embeddings(
    df: DataFrame,
    columns: Mapping[str, str | Column] | Sequence[str],
    *,
    options: EmbedOptions | EmbedConfig | None = None,
    suffix: str = "_embedding",
    output_columns: Mapping[str, str] | None = None,
    metrics: EmbedMetrics | None = None,
    **kwargs: Unpack[EmbedKwargs],
) -> DataFrame:
    """Add an embedding column for each text column, each with its role; one model load serves them all.

    Args:
        df: the DataFrame.
        columns: text column -> role (``"query"``, ``"passage"``, ...) or a Column holding each row's role
            (null there means ``options.role``); a plain list of names embeds them all with the role ``query``.
        options: the :class:`EmbedOptions` (model, batching, device, precision, storage, ...), or an embedding
            already prepared from them (:func:`~user_spark.embedding.udf.prepare_embedding`: model fetched, spec
            read), which ``**kwargs`` may not change.
        suffix: output column name = text column name + suffix.
        output_columns: explicit output names for some text columns.
        metrics: counters (rows, nulls, tokens, truncated) to update once an action runs.
        **kwargs: :class:`EmbedOptions` fields applied on top of ``options`` (``model=``, ``precision=``, ...).

    Returns:
        ``df`` with one ``array<float>`` column per text column (``binary`` with ``storage="float16"``), every
        input row kept in order. Each output column's metadata (``df.schema[name].metadata["user_spark"]``)
        records the model, its revision (hub commit, or a hash of the weight files), the role and prompt, the
        dimension, whether vectors are normalised and the storage; Parquet keeps it.

    Raises:
        ColumnError: a missing or non-string column, or an output column that already exists.
        RoleError: an unknown role. OptionError: an unknown or invalid option.

    >>> with_embeddings(df, {"title": "query", "body": "passage"})  # doctest: +SKIP
    DataFrame[id: bigint, title: string, body: string, title_embedding: array<float>, body_embedding: array<float>]
    """
    mapping, outputs = _plan(df, columns, suffix, output_columns)
    if isinstance(options, EmbedConfig):
        if kwargs:
            raise OptionError(f"with_embeddings got a prepared embedding and options {sorted(kwargs)}; give one")
        base = options
    else:
        base = prepare_embedding(EmbedOptions.build(options, **kwargs), spark=df.sparkSession)
    metrics = metrics or EmbedMetrics.create(df.sparkSession)
    udfs = {role: EmbeddingUDF(base.with_role(role), metrics) for role in mapping.values() if isinstance(role, str)}
    result = df
    for name, role in mapping.items():
        if isinstance(role, str):
            col = udfs[role](column(name))
        else:
            col = EmbeddingUDF(base, metrics)(column(name), role)
        meta = embedding_metadata(base, role if isinstance(role, str) else None)
        result = with_named_column(result, outputs[name], col, meta)
    return result


def embedding_metadata(config: EmbedConfig, role: str | None) -> dict[str, Any]:
    """What an embedding column holds, for its Spark column metadata (``role=None``: chosen per row)."""
    spec = config.spec
    return {"user_spark": {
        "model": config.model_name,
        "revision": config.revision,
        "role": role if role is not None else "per_row",
        "prompt": spec.prompts[role] if role is not None else None,
        "default_role": config.role if role is None else None,
        "dimension": spec.dimension,
        "normalized": spec.normalize,
        "storage": config.options.storage,
    }}
