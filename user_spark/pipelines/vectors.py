"""Driver-side input checks and the embedding column every job works on.

A job gets its vectors either from an existing ``array<float>``/``array<double>`` column (``embedding_col=``)
or by embedding a text column with the core UDF (:func:`user_spark.with_embeddings`) in the role the job
needs. Either way the result is a frame ``(_id, _vec)`` of rows that have a vector; embedded frames are
checkpointed once so later passes (counts, several joins) do not run the model again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from user_spark.embedding.columns import check_text_column, column
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions
from user_spark.errors import ColumnError, OptionError
from user_spark.pipelines.frames import one_row

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from user_spark.embedding.udf import EmbedConfig
    from user_spark.pipelines.staging import Staging

__all__ = [
    "ID",
    "VEC",
    "SideStats",
    "check_embedding_column",
    "check_id_column",
    "check_unique_ids",
    "check_vector_source",
    "hash_sample",
    "prepare_vectors",
    "require_vectors",
    "side_stats",
    "vector_frame",
]

logger = logging.getLogger(__name__)

ID = "_id"
VEC = "_vec"


def check_id_column(df: DataFrame, id_col: str) -> None:
    """Raise :class:`ColumnError` unless ``id_col`` exists and is an integer or string column."""
    from pyspark.sql.types import IntegralType, StringType

    fields = {f.name: f for f in df.schema.fields}
    if id_col not in fields:
        raise ColumnError(f"Id column {id_col!r} not found; available: {list(fields)}")
    dtype = fields[id_col].dataType
    if not isinstance(dtype, (IntegralType, StringType)):
        raise ColumnError(
            f"Id column {id_col!r} is {dtype.simpleString()}; ids must be integers or strings (they order "
            f"results and break ties). Cast it: df.withColumn({id_col!r}, F.col({id_col!r}).cast('string'))"
        )


def _refuse_duplicate_ids(per_id: DataFrame, id_col: str, what: str) -> None:
    """Raise :class:`ColumnError` naming up to three repeated (or null) ids of ``per_id`` = ``(_id, count)``."""
    from pyspark.sql import functions as F

    dup = (
        per_id.where((F.col("count") > 1) | F.col("_id").isNull())
        .orderBy(F.col("_id").asc_nulls_first())
        .limit(3)
        .collect()
    )
    shown = ", ".join(f"{r[0]!r} ({r[1]} rows)" for r in dup)
    raise ColumnError(
        f"Id column {id_col!r} of the {what} must be unique and not null; found {shown}. "
        f"Deduplicate ids first or add a unique id: df.withColumn('row_id', F.monotonically_increasing_id())"
    )


def check_unique_ids(df: DataFrame, id_col: str, what: str = "input") -> int:
    """Raise :class:`ColumnError` if ``id_col`` has nulls or repeats; else return the row count.

    One aggregate over the id column; a second, small job only to name the offending ids.
    """
    from pyspark.sql import functions as F

    per_id = df.groupBy(column(id_col).alias("_id")).count()
    stats = per_id.agg(
        F.sum("count").alias("rows"),
        F.max("count").alias("most"),
        F.count(F.when(F.col("_id").isNull(), 1)).alias("nulls"),
    ).first()
    assert stats is not None
    if (stats["most"] or 0) > 1 or stats["nulls"]:
        _refuse_duplicate_ids(per_id, id_col, what)
    return int(stats["rows"] or 0)


def check_embedding_column(df: DataFrame, name: str, *, check_lengths: bool = True) -> int | None:
    """Validate an existing embedding column; returns its vector length (``None`` if every row is null).

    The column holds ``array<float>``/``array<double>``, or ``binary`` float16 vectors (``storage="float16"``).
    ``check_lengths`` runs one aggregate over the column to make sure all vectors are equally long.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, BinaryType, DoubleType, FloatType

    fields = {f.name: f for f in df.schema.fields}
    if name not in fields:
        raise ColumnError(f"Embedding column {name!r} not found; available: {list(fields)}")
    dtype = fields[name].dataType
    half = isinstance(dtype, BinaryType)
    if not (half or (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, (FloatType, DoubleType)))):
        raise ColumnError(
            f"Embedding column {name!r} is {dtype.simpleString()}, expected array<float>, array<double> or binary "
            "(float16 vectors); a Spark ML vector converts with pyspark.ml.functions.vector_to_array"
        )
    if not check_lengths:
        return None
    size = _vector_size(df, name)
    row = df.where(column(name).isNotNull()).select(F.min(size).alias("lo"), F.max(size).alias("hi")).first()
    return _vector_length(name, half, *((row["lo"], row["hi"]) if row else (None, None)))


def _vector_size(df: DataFrame, name: str) -> Column:
    """The stored size of each vector: values, or bytes for float16 (``binary``); null for a null vector (Spark
    3.5's ``size(null)`` is -1)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    vec = column(name)
    size = F.length(vec) if isinstance(df.schema[name].dataType, BinaryType) else F.size(vec)
    return F.when(vec.isNotNull(), size)


def _vector_length(name: str, half: bool, lo: int | None, hi: int | None) -> int | None:
    """The vector length from the smallest and largest stored sizes; raise unless all are equal and valid."""
    if lo is None or hi is None:
        return None
    unit = " bytes" if half else ""
    if lo != hi:
        raise ColumnError(
            f"Embedding column {name!r} holds vectors of different lengths ({lo} to {hi}{unit}); all must be "
            "equally long"
        )
    if hi == 0:
        raise ColumnError(f"Embedding column {name!r} holds empty vectors")
    if half and hi % 2:
        raise ColumnError(
            f"Embedding column {name!r} is binary but its values are {hi} bytes, not float16 vectors (2 bytes per "
            "value); write it with storage='float16' or convert it to array<float>"
        )
    return int(hi) // 2 if half else int(hi)


def check_vector_source(df: DataFrame, id_col: str, text_col: str | None, embedding_col: str | None) -> None:
    """The schema checks of a job's input, no Spark job: the id column, the embedding column and the text column
    (embedded when there is no embedding column; else still read: exact duplicates, labels)."""
    check_id_column(df, id_col)
    if embedding_col is not None:
        check_embedding_column(df, embedding_col, check_lengths=False)
    if text_col is not None:
        check_text_column(df, text_col)


def require_vectors(
    text_col: str | None, embedding_col: str | None, what: str, *, text_arg: str = "text_col=",
    embedding_arg: str = "embedding_col=",
) -> None:
    """A job needs a text column to embed or an embedding column; raise if it has neither."""
    if text_col is None and embedding_col is None:
        raise OptionError(f"{what} needs {text_arg} (a text column to embed) or {embedding_arg} (your vectors)")


def prepare_vectors(spark: SparkSession, options: EmbedOptions, embeds: bool) -> EmbedOptions | EmbedConfig:
    """The embedding a job will run, prepared on the driver before its first Spark job (model found or fetched,
    its spec read, the role checked against its prompts), so a wrong model or option fails before any work; as
    given when the job embeds nothing (``embeds=False``: it reads an embedding column).

    Raises:
        ModelSourceError: the model cannot be found, fetched or read. OptionError, RoleError: see EmbedOptions.
    """
    if not embeds:
        return options
    from user_spark.embedding.udf import prepare_embedding

    return prepare_embedding(options, spark=spark)


def hash_sample(df: DataFrame, col: str, fraction: float, seed: int) -> DataFrame:
    """The rows whose hash of ``col`` (with ``seed``) falls in the first ``fraction``: the same rows whatever the
    partitioning, about ``fraction`` of them."""
    from pyspark.sql import functions as F

    if fraction >= 1.0:
        return df
    buckets = 1 << 20
    return df.where(F.pmod(F.xxhash64(F.col(col), F.lit(seed)), F.lit(buckets)) < int(fraction * buckets))


@dataclass(frozen=True)
class SideStats:
    """What one aggregate over an input learned: its rows, the rows with a vector, and the vector length
    (``None`` without an embedding column, or when every vector is null)."""

    rows: int
    vectors: int
    dim: int | None


def side_stats(df: DataFrame, id_col: str, *, embedding_col: str | None = None, check_ids: bool = True,
               what: str = "input") -> SideStats:
    """Row count, vector count and vector length of ``df`` in one job, checking on the way that ids are unique
    and not null (``check_ids``) and that the vectors of ``embedding_col`` are equally long.

    Raises:
        ColumnError: repeated or null ids; vectors of different lengths, empty, or odd float16 buffers.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    vec = [] if embedding_col is None else [
        F.min(_vector_size(df, embedding_col)).alias("lo"), F.max(_vector_size(df, embedding_col)).alias("hi"),
        F.count(column(embedding_col)).alias("nv"),
    ]
    if check_ids:
        per_id = df.groupBy(column(id_col).alias("_id")).agg(F.count(F.lit(1)).alias("count"), *vec)
        totals = [F.sum("count").alias("rows"), F.max("count").alias("most"),
                  F.count(F.when(F.col("_id").isNull(), 1)).alias("nulls")]
        if vec:
            totals += [F.min("lo").alias("lo"), F.max("hi").alias("hi"), F.sum("nv").alias("nv")]
        stats = one_row(per_id.agg(*totals))
        if (stats["most"] or 0) > 1 or stats["nulls"]:
            _refuse_duplicate_ids(per_id.select("_id", "count"), id_col, what)
    else:
        stats = one_row(df.agg(F.count(F.lit(1)).alias("rows"), *vec))
    rows = int(stats["rows"] or 0)
    if embedding_col is None:
        return SideStats(rows, rows, None)
    half = isinstance(df.schema[embedding_col].dataType, BinaryType)
    return SideStats(rows, int(stats["nv"] or 0), _vector_length(embedding_col, half, stats["lo"], stats["hi"]))


def vector_frame(
    df: DataFrame,
    id_col: str,
    *,
    text_col: str | None,
    embedding_col: str | None,
    options: EmbedOptions | EmbedConfig,
    metrics: EmbedMetrics | None = None,
    check_lengths: bool = True,
    staging: Staging | None = None,
    keep_float16: bool = False,
) -> DataFrame:
    """``(_id, _vec)`` for the rows of ``df`` with a vector: ``embedding_col`` when given, else ``text_col``
    embedded with ``options`` (in its role; prepared by :func:`prepare_vectors` or as given).

    Embedding runs once: the embedded frame is staged as Parquet by ``staging`` (durable: a lost executor does
    not lose it, :mod:`user_spark.pipelines.staging`), or without one checkpointed locally (lineage cut, blocks
    on the executors). ``keep_float16``: a float16 (``binary``) column stays binary, half the bytes to move.
    """
    from pyspark.sql import functions as F

    if embedding_col is not None:
        from pyspark.sql.types import BinaryType

        from user_spark.embedding.storage import decode_float16

        check_embedding_column(df, embedding_col, check_lengths=check_lengths)
        half = isinstance(df.schema[embedding_col].dataType, BinaryType)
        source_col = column(embedding_col)
        if half:
            vectors = source_col if keep_float16 else decode_float16(source_col)
        else:
            vectors = source_col.cast("array<float>")
        source = df.select(column(id_col).alias(ID), vectors.alias(VEC))
        return source.where(F.col(VEC).isNotNull())
    assert text_col is not None
    check_text_column(df, text_col)
    from user_spark.embedding.frame import with_embeddings

    out_name = "__user_spark_embedding"
    embedded = with_embeddings(
        df.select(column(id_col).alias(ID), column(text_col).alias("_text")), {"_text": options.role},
        options=options, output_columns={"_text": out_name}, metrics=metrics,
    )
    frame = embedded.select(ID, F.col(out_name).alias(VEC))
    logger.info("embedding %r in role %r (staged once, reused by every pass)", text_col, options.role)
    # Null vectors are dropped after staging, not before: the optimizer would copy the UDF into a filter
    # on its own output and run the model twice (measured: 60 texts embedded for 30 rows).
    if staging is not None:
        kept = staging.stage(frame, f"embeddings-{options.role}-{text_col}")
    else:
        from user_spark.pipelines.staging import local_checkpoint

        kept = local_checkpoint(frame)
    return kept.where(F.col(VEC).isNotNull())
