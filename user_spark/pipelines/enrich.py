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

import hashlib
import logging
import math
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from user_spark.runtime import faults as _faults
from user_spark.errors import ColumnError, OptionError, UserSparkError
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.model.source import DEFAULT_MODEL
from user_spark.embedding.storage import Storage, check_storage
from user_spark.embedding.udf import check_text_column, embedding_metadata, prepare_embedding, with_embeddings
from user_spark.pipelines.vectors import check_id_column

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

__all__ = ["EnrichResult", "enrich", "current_embeddings", "content_hash", "HASH_COL", "BATCH_COL"]

logger = logging.getLogger(__name__)

HASH_COL = "content_hash"
BATCH_COL = "batch"
DEFAULT_COMMIT_ROWS = 100_000
MIN_ROWS_PER_TASK = 64
OutputFormat = Literal["parquet", "delta"]
OUTPUT_FORMATS: tuple[str, ...] = ("parquet", "delta")


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


_fingerprints: dict[tuple[str, int, int], str] = {}
_fingerprint_lock = threading.Lock()


def _weights_fingerprint(folder: str, weights: Sequence[str]) -> str:
    """``sha256:<16 hex>`` of the weight files' bytes: identifies a model folder that has no hub revision."""
    digest = hashlib.sha256()
    with _fingerprint_lock:
        for name in weights:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
            if key not in _fingerprints:
                part = hashlib.sha256()
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 23), b""):
                        part.update(block)
                _fingerprints[key] = part.hexdigest()
            digest.update(name.encode() + b"\0" + _fingerprints[key].encode())
    return "sha256:" + digest.hexdigest()[:16]


def _read_existing(spark: SparkSession, output: str, output_format: str) -> DataFrame | None:
    """The output table, or ``None`` if nothing was committed to it yet."""
    from pyspark.errors import AnalysisException

    try:
        existing = spark.read.format(output_format).load(output)
        existing.schema  # noqa: B018 - over Spark Connect, reading is lazy until the schema is asked for
        return existing
    except AnalysisException as exc:
        text = str(exc)
        if any(s in text for s in ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA", "is not a Delta table")):
            return None
        raise UserSparkError(f"Cannot read the output {output!r} as {output_format}: {text.splitlines()[0]}") from None


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
    return default_parallelism(spark) or int(spark.conf.get("spark.sql.shuffle.partitions", "200") or 200)


def _check_ids(keyed: DataFrame, id_col: str) -> None:
    """Refuse null ids and ids that appear with two different texts anywhere in the input.

    The whole input, not only the rows still to embed: an id whose old text is in the output and whose new
    text is appended (an append-only source) would otherwise get a second current row.
    """
    from pyspark.sql import functions as F

    per_id = keyed.groupBy(id_col).agg(F.countDistinct(HASH_COL).alias("n"))
    stats = per_id.agg(
        F.max("n").alias("most"), F.count(F.when(F.col(id_col).isNull(), 1)).alias("null_ids")
    ).first()
    if stats["null_ids"]:
        raise ColumnError(f"Id column {id_col!r} has null values; every row needs an id")
    if stats["most"] and stats["most"] > 1:
        shown = [r[0] for r in per_id.where(F.col("n") > 1).orderBy(id_col).limit(3).collect()]
        raise ColumnError(
            f"Ids {shown} appear with different texts in the input; an id must name one row. Deduplicate the "
            "input (e.g. keep the newest row per id) before enriching."
        )


def enrich(
    df: DataFrame,
    output: str,
    *,
    id_col: str,
    columns: Mapping[str, str],
    model: str = DEFAULT_MODEL,
    output_format: OutputFormat = "parquet",
    commit_rows: int = DEFAULT_COMMIT_ROWS,
    partitions: int | None = None,
    suffix: str = "_embedding",
    model_revision: str | None = None,
    storage: Storage = "float32",
    metrics: EmbedMetrics | None = None,
    **options: Any,
) -> EnrichResult:
    """Embed the rows of ``df`` that ``output`` does not hold yet and append them to it.

    Args:
        df: the input (any table: Parquet, Delta, Hive, ...), one row per id.
        output: the output table's path (created by the first run).
        id_col: the input's unique id column (integer or string).
        columns: text column -> role (``{"body": "passage"}``); each adds ``<column><suffix>``.
        model: as in :func:`user_spark.embed_udf`.
        output_format: ``"parquet"`` (default) or ``"delta"`` (each batch one Delta transaction).
        commit_rows: rows per committed batch: a killed run loses at most the batch in flight.
        partitions: tasks per batch (default: Spark's default parallelism).
        suffix: output column name suffix.
        model_revision: the revision recorded for the model (default: the hub commit, or a SHA-256 of the
            weight files for a folder).
        storage: ``"float32"`` or ``"float16"`` (see :mod:`user_spark.embedding.storage`).
        metrics: counters to update.
        **options: other :func:`user_spark.embed_udf` options (``batch_tokens``, ``device``, ``precision``,
            ``udf_type``, ...); roles come from ``columns``.

    Returns:
        :class:`EnrichResult`.

    Raises:
        ColumnError: a missing or non-string column, null ids, an id with two texts, or an output of another
            shape.
        OptionError: the output was written with another model, revision, role or storage.

    >>> enrich(spark.read.parquet("/lake/docs"), "/lake/docs_emb", id_col="id", columns={"body": "passage"})
    EnrichResult(output='/lake/docs_emb', rows_embedded=1200, batches=('20261124T101500Z-3f2a9c-0000',), ...)
    """
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
    if "role" in options:
        raise OptionError("enrich takes each column's role from columns=, e.g. columns={'body': 'passage'}")
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
    storage = check_storage(storage)

    spark = df.sparkSession
    metrics = metrics or EmbedMetrics.create(spark)
    udf_type = options.pop("udf_type", "auto")
    config = prepare_embedding(model, spark=spark, **options)
    if model_revision is None:
        model_revision = config.model_revision or _folder_fingerprint(spark, model, config, options)
    config = replace(config, model_revision=model_revision)
    expected = {outputs[name]: embedding_metadata(replace(config, role=role), role, storage)
                for name, role in columns.items()}
    options = dict(options, model_revision=model_revision, storage=storage, udf_type=udf_type)

    id_type = df.schema[id_col].dataType
    existing = _read_existing(spark, output, output_format)
    text_cols = list(columns)
    keyed = df.select(id_col, *text_cols).withColumn(HASH_COL, content_hash(text_cols))
    if existing is not None:
        _check_existing(existing, output, id_col, id_type, expected)
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
        batches = _commit_batches(
            missing, output, output_format, todo, commit_rows, tasks, id_col, columns, outputs, model, metrics,
            options,
        )
    finally:
        missing.unpersist()
    return EnrichResult(output, todo, tuple(batches), model_revision, metrics.as_dict())


def _folder_fingerprint(spark: SparkSession, model: str, config: Any, options: Mapping[str, Any]) -> str:
    from user_spark.model.shipping import ship_model

    local_dir, _ = ship_model(
        spark, model, ship=options.get("ship", "auto"), revision=options.get("revision"),
        allow_pickle=options.get("allow_pickle", False),
    )
    folder = os.path.join(local_dir, config.spec.transformer_subdir)
    return _weights_fingerprint(folder, config.spec.weights)


def _commit_batches(
    missing: DataFrame,
    output: str,
    output_format: str,
    todo: int,
    commit_rows: int,
    tasks: int,
    id_col: str,
    columns: Mapping[str, str],
    outputs: Mapping[str, str],
    model: str,
    metrics: EmbedMetrics,
    options: Mapping[str, Any],
) -> list[str]:
    from pyspark.sql import functions as F

    if todo == 0:
        logger.info("%s is up to date: nothing to embed", output)
        return []
    n_batches = math.ceil(todo / commit_rows)
    run = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    bucket = F.pmod(F.xxhash64(id_col, HASH_COL), F.lit(n_batches))
    done = []
    # Small batches in fewer tasks: a nightly run of 1,000 rows on 200 cores should not write 200 tiny files.
    per_batch = min(tasks, math.ceil(todo / n_batches / MIN_ROWS_PER_TASK))
    for i in range(n_batches):
        batch_id = f"{run}-{i:04d}"
        part = missing if n_batches == 1 else missing.where(bucket == i)
        if per_batch < tasks:
            part = part.coalesce(per_batch)
        embedded = with_embeddings(
            part, dict(columns), model=model, output_columns=dict(outputs), metrics=metrics, **options
        ).select(id_col, HASH_COL, *outputs.values())
        logger.info("committing batch %d of %d (%s) to %s", i + 1, n_batches, batch_id, output)
        if output_format == "parquet":
            embedded.write.mode("error").parquet(f"{output.rstrip('/')}/{BATCH_COL}={batch_id}")
        else:
            (embedded.withColumn(BATCH_COL, F.lit(batch_id)).write.format(output_format)
             .mode("append").partitionBy(BATCH_COL).save(output))
        done.append(batch_id)
        _faults.after_commit(len(done))  # test-only; a no-op unless USER_SPARK_TEST_FAULT is set
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
