"""Incremental enrichment: embed only the rows of a growing table that the output does not hold yet.

The output is an append-only table of ``(id, content_hash, <column>_embedding...)`` rows, partitioned by
``batch``. A row of the input is done when the output holds its ``(id, content_hash)``; ``content_hash`` is a
SHA-256 of the embedded text columns, and the model, its revision, each column's role and the storage are fixed
per output and recorded in the embedding columns' metadata (a run with another model or role is refused, so
the key is in effect ``(id, content hash, model, role)``). So:

- a re-run on unchanged input embeds nothing; after ``N`` rows are appended it embeds exactly those ``N``;
- a row whose text changed is embedded again and appended (the old version stays: Parquet files are not
  rewritten); :func:`current_embeddings` gives the rows that match the input as it is now;
- the missing rows are committed in batches of about ``commit_rows``; each batch is one Spark write into its
  own folder ``<output>/batch=<id>``, so a run killed mid-way (driver included) keeps every batch it committed,
  and the next run embeds only what is still missing. A batch that was being written when the driver died
  left nothing but a hidden ``_temporary`` folder (Spark moves task files into place only at job commit, and
  each batch has a folder of its own, so no later commit picks up a dead run's task files).

With ``output_format="delta"`` (Databricks) each batch is appended with ``partitionBy("batch")`` as one
Delta transaction. One run per output at a time: two concurrent runs would both embed the same missing rows.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from user_spark.compat import error_condition
from user_spark.embedding.columns import check_text_column
from user_spark.embedding.frame import embedding_metadata, with_embeddings
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedKwargs, EmbedOptions, coerce_options
from user_spark.embedding.udf import prepare_embedding
from user_spark.errors import ColumnError, OptionError, UserSparkError
from user_spark.pipelines.frames import one_row, shuffle_partitions_setting
from user_spark.pipelines.vectors import check_id_column
from user_spark.runtime import faults

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from typing_extensions import Unpack

__all__ = ["BATCH_COL", "HASH_COL", "EnrichResult", "content_hash", "current_embeddings", "enrich"]

logger = logging.getLogger(__name__)

HASH_COL = "content_hash"
BATCH_COL = "batch"
DEFAULT_COMMIT_ROWS = 100_000
MIN_ROWS_PER_TASK = 64
OutputFormat = Literal["parquet", "delta"]
OUTPUT_FORMATS: tuple[str, ...] = ("parquet", "delta")
# What reading an output that no batch was committed to raises: no folder, an empty one, no Delta log.
_NOTHING_COMMITTED = frozenset({
    "PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA", "DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND",
})


@dataclass(frozen=True)
class EnrichResult:
    """What one :func:`enrich` run did.

    Attributes:
        output: the output table's path.
        rows_embedded: rows this run embedded and committed (0 when the output was up to date).
        batches: the ``batch`` values this run committed, in order.
        model_revision: the model revision recorded in the output.
        metrics: the embedding UDF's counters (rows, nulls, tokens, truncated; ``None`` over Spark Connect).
    """

    output: str
    rows_embedded: int
    batches: tuple[str, ...]
    model_revision: str
    metrics: dict[str, int | None]


def content_hash(columns: Sequence[str]) -> Column:
    """SHA-256 (hex) of the text columns' values, by column name (their order does not matter).

    Each column is hashed on its own first (null and empty text differ), then the column names and their
    hashes: no text can imitate the boundary between two columns.
    """
    from pyspark.sql import functions as F

    parts = []
    for name in sorted(columns):
        text = F.sha2(F.coalesce(F.concat(F.lit("s"), F.col(name)), F.lit("n")), 256)
        parts.append(F.concat(F.lit(f"{len(name)}:{name}="), text))
    return F.sha2(F.concat_ws(",", *parts), 256)


def _read_existing(spark: SparkSession, output: str, output_format: str) -> DataFrame | None:
    """The output table, or ``None`` if nothing was committed to it yet."""
    from pyspark.errors import AnalysisException

    try:
        existing = spark.read.format(output_format).load(output)
        existing.schema  # noqa: B018 - over Spark Connect, reading is lazy until the schema is asked for
        return existing
    except AnalysisException as exc:
        if error_condition(exc) in _NOTHING_COMMITTED:
            return None
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserSparkError(f"Cannot read the output {output!r} as {output_format}: {first}") from None


def _check_existing(
    existing: DataFrame, output: str, id_col: str, id_type: Any, expected: Mapping[str, dict[str, Any]]
) -> None:
    """The output must have been written by this kind of run: same id, same columns, model, roles, storage."""
    fields = {f.name: f for f in existing.schema.fields}
    hint = "Write to a new output, or delete the old one to start over."
    cast = f"df.withColumn({id_col!r}, F.col({id_col!r}).cast({fields[id_col].dataType.simpleString()!r}))" \
        if id_col in fields else ""
    if id_col not in fields or HASH_COL not in fields:
        raise ColumnError(
            f"{output!r} is not an enrichment output for id column {id_col!r} (it has columns {list(fields)}). {hint}"
        )
    if fields[id_col].dataType != id_type:
        raise ColumnError(
            f"Id column {id_col!r} is {id_type.simpleString()} in the input but "
            f"{fields[id_col].dataType.simpleString()} in {output!r}; cast the input's ids first: {cast}"
        )
    have = sorted(n for n in fields if n not in (id_col, HASH_COL, BATCH_COL))
    if have != sorted(expected):
        raise ColumnError(f"{output!r} holds embedding columns {have}; this run writes {sorted(expected)}. {hint}")
    for name, meta in expected.items():
        old = dict(fields[name].metadata.get("user_spark", {}))
        new = meta["user_spark"]
        # The revision identifies the model; its name may differ (a folder that moved, a hub id vs its copy).
        diff = {k: (old.get(k), v) for k, v in new.items() if k != "model" and old.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: {a!r} in the output, {b!r} now" for k, (a, b) in sorted(diff.items()))
            extra = ""
            if "revision" in diff:
                extra = (f" If it is the same model under another name (a copy of a hub model), pass "
                         f"model_revision={old.get('revision')!r} (--model-revision).")
            raise OptionError(f"{output!r} column {name!r} was written differently ({shown}).{extra} {hint}")


def _default_partitions(spark: SparkSession) -> int:
    from user_spark.connect import default_parallelism

    # Over Spark Connect without spark.default.parallelism the client cannot see the cores: shuffle partitions.
    return default_parallelism(spark) or shuffle_partitions_setting(spark)


def _check_ids(keyed: DataFrame, id_col: str) -> None:
    """Refuse null ids and ids that appear with two different texts anywhere in the input.

    The whole input, not only the rows still to embed: an id whose old text is in the output and whose new
    text is appended (an append-only source) would otherwise get a second current row.
    """
    from pyspark.sql import functions as F

    per_id = keyed.groupBy(id_col).agg(F.countDistinct(HASH_COL).alias("n"))
    stats = one_row(per_id.agg(
        F.max("n").alias("most"), F.count(F.when(F.col(id_col).isNull(), 1)).alias("null_ids")
    ))
    if stats["null_ids"]:
        raise ColumnError(f"Id column {id_col!r} has null values; every row needs an id")
    if stats["most"] and stats["most"] > 1:
        shown = [r[0] for r in per_id.where(F.col("n") > 1).orderBy(id_col).limit(3).collect()]
        raise ColumnError(
            f"Ids {shown} appear with different texts in the input; an id must name one row. Deduplicate the "
            "input (e.g. keep the newest row per id) before enriching."
        )


def _check_request(
    df: DataFrame, id_col: str, columns: Mapping[str, str], output_format: str, commit_rows: int,
    partitions: int | None, suffix: str,
) -> dict[str, str]:
    """Driver-side checks of an enrich call; returns text column -> output column."""
    if not columns:
        raise OptionError("Name at least one text column to embed, e.g. columns={'body': 'passage'}")
    if commit_rows < 1:
        raise OptionError(f"commit_rows must be >= 1, got {commit_rows}")
    if partitions is not None and partitions < 1:
        raise OptionError(f"partitions must be >= 1, got {partitions}")
    if output_format not in OUTPUT_FORMATS:
        raise OptionError(
            f"output_format must be one of {list(OUTPUT_FORMATS)}, got {output_format!r}: other file formats do not "
            "keep the embedding columns' metadata, and appending them is not safe after a crash"
        )
    check_id_column(df, id_col)
    for name, role in columns.items():
        check_text_column(df, name)
        if not isinstance(role, str):
            raise OptionError(f"enrich needs a fixed role per column; got {role!r} for {name!r}")
    outputs = {name: f"{name}{suffix}" for name in columns}
    named = {id_col, *columns, *outputs.values()}
    clash = sorted(named & {HASH_COL, BATCH_COL} | set(outputs.values()) & {id_col, *columns})
    if clash:
        raise ColumnError(f"Columns {clash} clash with the output's own columns ({HASH_COL!r}, {BATCH_COL!r}, the id, "
                          "the embeddings); rename them")
    return outputs


def enrich(
    df: DataFrame,
    output: str,
    *,
    id_col: str,
    columns: Mapping[str, str],
    output_format: OutputFormat = "parquet",
    commit_rows: int = DEFAULT_COMMIT_ROWS,
    partitions: int | None = None,
    suffix: str = "_embedding",
    embed_options: EmbedOptions | Mapping[str, Any] | None = None,
    metrics: EmbedMetrics | None = None,
    **kwargs: Unpack[EmbedKwargs],
) -> EnrichResult:
    """Embed the rows of ``df`` that ``output`` does not hold yet and append them to it.

    Args:
        df: the input (any table: Parquet, Delta, Hive, ...), one row per id.
        output: the output table's path (created by the first run).
        id_col: the input's unique id column (integer or string).
        columns: text column -> role (``{"body": "passage"}``); each adds ``<column><suffix>``.
        output_format: ``"parquet"`` (default) or ``"delta"`` (each batch one Delta transaction).
        commit_rows: rows per committed batch: a killed run loses at most the batch in flight.
        partitions: tasks per batch (default: Spark's default parallelism).
        suffix: output column name suffix.
        embed_options: an :class:`~user_spark.EmbedOptions` (roles come from ``columns``). The revision
            recorded for the model is its ``model_revision``, default the hub commit or a SHA-256 of the weight
            files; ``storage`` is ``"float32"`` or ``"float16"``.
        metrics: counters to update.
        **kwargs: :class:`~user_spark.EmbedOptions` fields on top of ``embed_options`` (``model=``, ``storage=``,
            ``precision=``, ...).

    Returns:
        :class:`EnrichResult`.

    Raises:
        ColumnError: a missing or non-string column, null ids, an id with two texts, or an output of another
            shape.
        OptionError: the output was written with another model, revision, role or storage.

    >>> enrich(spark.read.parquet("/lake/docs"), "/lake/docs_emb", id_col="id", columns={"body": "passage"})
    EnrichResult(output='/lake/docs_emb', rows_embedded=1200, batches=('20261124T101500Z-3f2a9c-0000',), ...)
    """
    if "role" in kwargs:
        raise OptionError("enrich takes each column's role from columns=, e.g. columns={'body': 'passage'}")
    outputs = _check_request(df, id_col, columns, output_format, commit_rows, partitions, suffix)
    spark = df.sparkSession
    metrics = metrics or EmbedMetrics.create(spark)
    config = prepare_embedding(EmbedOptions.build(coerce_options(embed_options), **kwargs), spark=spark)
    options = config.options.replace(model_revision=config.revision)
    expected = {outputs[name]: embedding_metadata(config.with_role(role), role) for name, role in columns.items()}
    existing = _read_existing(spark, output, output_format)
    text_cols = list(columns)
    keyed = df.select(id_col, *text_cols).withColumn(HASH_COL, content_hash(text_cols))
    if existing is not None:
        _check_existing(existing, output, id_col, df.schema[id_col].dataType, expected)
    _check_ids(keyed, id_col)
    if existing is not None:
        keyed = keyed.join(existing.select(id_col, HASH_COL), [id_col, HASH_COL], "left_anti")
    tasks = partitions or _default_partitions(spark)
    # An explicit partition count: adaptive execution would otherwise coalesce the (small) text rows into a
    # task or two and leave the other cores idle while the model runs. Partitioned by the key, the
    # deduplication after it needs no second shuffle.
    missing = keyed.repartition(tasks, id_col, HASH_COL).dropDuplicates([id_col, HASH_COL]).persist()
    try:
        todo = missing.count()
        plan = _BatchPlan(output, output_format, todo, commit_rows, tasks, id_col, dict(columns), outputs)
        batches = _commit_batches(missing, plan, options, metrics)
    finally:
        missing.unpersist()
    return EnrichResult(output, todo, tuple(batches), str(config.revision), metrics.as_dict())


@dataclass(frozen=True)
class _BatchPlan:
    output: str
    output_format: str
    todo: int
    commit_rows: int
    tasks: int
    id_col: str
    columns: dict[str, str]
    outputs: dict[str, str]


def _commit_batches(missing: DataFrame, plan: _BatchPlan, options: EmbedOptions, metrics: EmbedMetrics) -> list[str]:
    from pyspark.sql import functions as F

    if plan.todo == 0:
        logger.info("%s is up to date: nothing to embed", plan.output)
        return []
    n_batches = math.ceil(plan.todo / plan.commit_rows)
    run = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    bucket = F.pmod(F.xxhash64(plan.id_col, HASH_COL), F.lit(n_batches))
    done = []
    # Small batches in fewer tasks: a nightly run of 1,000 rows on 200 cores should not write 200 tiny files.
    per_batch = min(plan.tasks, math.ceil(plan.todo / n_batches / MIN_ROWS_PER_TASK))
    for i in range(n_batches):
        batch_id = f"{run}-{i:04d}"
        part = missing if n_batches == 1 else missing.where(bucket == i)
        if per_batch < plan.tasks:
            part = part.coalesce(per_batch)
        embedded = with_embeddings(
            part, dict(plan.columns), options=options, output_columns=dict(plan.outputs), metrics=metrics
        ).select(plan.id_col, HASH_COL, *plan.outputs.values())
        logger.info("committing batch %d of %d (%s) to %s", i + 1, n_batches, batch_id, plan.output)
        if plan.output_format == "parquet":
            embedded.write.mode("error").parquet(f"{plan.output.rstrip('/')}/{BATCH_COL}={batch_id}")
        else:
            (embedded.withColumn(BATCH_COL, F.lit(batch_id)).write.format(plan.output_format)
             .mode("append").partitionBy(BATCH_COL).save(plan.output))
        done.append(batch_id)
        faults.after_commit(len(done))  # test-only; a no-op unless USER_SPARK_TEST_FAULT is set
    return done


def current_embeddings(
    output: DataFrame, df: DataFrame, *, id_col: str, columns: Sequence[str] | Mapping[str, str]
) -> DataFrame:
    """The output rows that match ``df`` as it is now: one per id of ``df`` that has been enriched.

    Older versions of rows whose text changed since, and ids no longer in ``df``, are left out. ``columns``
    are the text columns the output was enriched with (their order does not matter).

    >>> current_embeddings(spark.read.parquet("/lake/docs_emb"), docs, id_col="id", columns=["body"])
    DataFrame[id: bigint, content_hash: string, body_embedding: array<float>, batch: string]
    """
    text_cols = list(columns)
    keys = df.select(id_col, content_hash(text_cols).alias(HASH_COL)).dropDuplicates([id_col, HASH_COL])
    return output.join(keys, [id_col, HASH_COL], "left_semi")
