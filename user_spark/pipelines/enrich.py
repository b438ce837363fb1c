"""Incremental enrichment: embed only the rows of a growing table that the output does not hold yet.

The output is an append-only table of ``(id, content_hash, <column>_embedding...)`` rows, partitioned by
``batch``. A row of the input is done when the output holds its ``(id, content_hash)``; ``content_hash`` is a
SHA-256 of the embedded text columns, and the model, its revision, each column's role, the storage and the
effective precision (``float32``, ``bfloat16``, ``float16``, ``int8``: what the executors run) are fixed per
output and recorded in the embedding columns' metadata (a run that differs is refused, so the key is in
effect ``(id, content hash, model, role, precision)``). So:

- a re-run on unchanged input embeds nothing; after ``N`` rows are appended it embeds exactly those ``N``;
- a row whose text changed is embedded again and appended (the old version stays: Parquet files are not
  rewritten); :func:`current_embeddings` gives the rows that match the input as it is now, and
  :func:`compact_embeddings` rewrites the output with one row per id;
- what is missing is found from keys alone, staged once and committed in exact batches
  (:mod:`user_spark.pipelines.backlog`): each batch is one Spark write into its own folder
  ``<output>/batch=<id>``, so a run killed mid-way (driver included) keeps every batch it committed, and the
  next run embeds only what is still missing. A batch that was being written when the driver died left
  nothing but a hidden ``_temporary`` folder.
- one run per output at a time: a run claims the output first (:mod:`user_spark.pipelines.claims`), and a
  second run refuses with :class:`~user_spark.errors.OutputBusyError`.

With ``output_format="delta"`` (Databricks) each batch is appended with ``partitionBy("batch")`` as one
Delta transaction.
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
from user_spark.embedding.columns import check_text_column, column, with_named_column
from user_spark.embedding.frame import embedding_metadata, with_embeddings
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedKwargs, EmbedOptions, coerce_options
from user_spark.embedding.udf import EmbedConfig, prepare_embedding
from user_spark.errors import ColumnError, OptionError, UserSparkError
from user_spark.pipelines.backlog import HASH_COL, Backlog, content_hash, find_backlog
from user_spark.pipelines.frames import shuffle_partitions_setting
from user_spark.pipelines.staging import Staging, open_staging
from user_spark.pipelines.vectors import check_id_column
from user_spark.runtime import faults

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from typing_extensions import Unpack

    from user_spark.pipelines.files import Files

__all__ = [
    "BATCH_COL",
    "HASH_COL",
    "CompactResult",
    "EnrichResult",
    "compact_embeddings",
    "content_hash",
    "current_embeddings",
    "enrich",
]

logger = logging.getLogger(__name__)

BATCH_COL = "batch"
DEFAULT_COMMIT_ROWS = 100_000
MIN_ROWS_PER_TASK = 64
OutputFormat = Literal["parquet", "delta"]
OUTPUT_FORMATS: tuple[str, ...] = ("parquet", "delta")
# What reading an output that no batch was committed to raises: no folder, an empty one, no Delta log.
_NOTHING_COMMITTED = frozenset({
    "PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA", "DELTA_MISSING_DELTA_TABLE", "DELTA_TABLE_NOT_FOUND",
})
# Metadata keys older outputs may lack: a missing value is not a mismatch. "device" is recorded, not compared.
_RECORDED_LATER = frozenset({"precision", "device"})


@dataclass(frozen=True)
class EnrichResult:
    """What one :func:`enrich` run did.

    Attributes:
        output: the output table's path.
        rows_embedded: rows this run embedded and committed (0 when the output was up to date).
        batches: the ``batch`` values this run committed, in order.
        model_revision: the model revision recorded in the output.
        metrics: the embedding UDF's counters (rows, nulls, tokens, truncated; ``None`` over Spark Connect).
        precision: the effective precision recorded in the output (``float32``, ``bfloat16``, ``float16``,
            ``int8``) and the device kind (``cpu``, ``cuda``).
        compacted: what :func:`compact_embeddings` did when the run compacted the output, else ``None``.
    """

    output: str
    rows_embedded: int
    batches: tuple[str, ...]
    model_revision: str
    metrics: dict[str, int | None]
    precision: tuple[str, str] = ("float32", "cpu")
    compacted: CompactResult | None = None


@dataclass(frozen=True)
class CompactResult:
    """What :func:`compact_embeddings` did: rows before and after, and the batch folders it replaced."""

    rows_before: int
    rows_after: int
    batches_replaced: int


def _has_batches(fs: Files | None, output: str, output_format: str) -> bool | None:
    """``False`` when nothing was committed to ``output``; ``True`` or ``None`` (read it to know) otherwise."""
    if fs is None:
        return None
    if not fs.exists(output):
        return False
    names = [e.name for e in fs.list(output)]
    if output_format == "delta" and "_delta_log" in names:
        return True
    # only hidden entries (a claim, a batch cut short): nothing committed; anything else: read it and see
    return None if any(not n.startswith(("_", ".")) for n in names) else False


def _read_existing(spark: SparkSession, output: str, output_format: str, fs: Files | None) -> DataFrame | None:
    """The output table, or ``None`` if nothing was committed to it yet. Where this process sees the filesystem
    it looks first, so a first run does not make Spark log a ``FileNotFoundException`` stack."""
    from pyspark.errors import AnalysisException

    if _has_batches(fs, output, output_format) is False:
        return None
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
        diff = {k: (old.get(k), v) for k, v in new.items() if k != "model" and old.get(k) != v
                and not (k in _RECORDED_LATER and (old.get(k) is None or k == "device"))}
        if diff:
            shown = ", ".join(f"{k}: {a!r} in the output, {b!r} now" for k, (a, b) in sorted(diff.items()))
            extra = ""
            if "revision" in diff:
                extra = (f" If it is the same model under another name (a copy of a hub model), pass "
                         f"model_revision={old.get('revision')!r} (--model-revision).")
            if "precision" in diff:
                extra += (f" The output was embedded in {old.get('precision')} on {old.get('device')}; run with the "
                          "precision= (--precision) and device that give the same.")
            raise OptionError(f"{output!r} column {name!r} was written differently ({shown}).{extra} {hint}")


def _default_partitions(spark: SparkSession) -> int:
    from user_spark.connect import default_parallelism

    # Over Spark Connect without spark.default.parallelism the client cannot see the cores: shuffle partitions.
    return default_parallelism(spark) or shuffle_partitions_setting(spark)


def _task_precision(device: Any, precision: Any, threads: int | None) -> tuple[str, str]:
    """``(dtype, device kind)`` the current executor task would embed with (the choice of
    :func:`user_spark.runtime.worker.place`, without claiming a GPU)."""
    import os

    from user_spark.runtime import gpu
    from user_spark.runtime.device import choose_device, cpu_has_native_bf16
    from user_spark.runtime.task import current

    facts, gpus = current(), gpu.cuda_devices()
    unassigned = 0 if gpus and not facts.gpu_addresses and device in ("auto", "cuda") else None
    choice = choose_device(
        requested=device, precision=precision, gpu_addresses=facts.gpu_addresses, gpus=gpus,
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), task_cpus=facts.cpus or 1, threads=threads,
        cpu_bf16=cpu_has_native_bf16(), unassigned_gpu=unassigned,
    )
    return choice.dtype, "cuda" if choice.is_cuda else "cpu"


def effective_precision(spark: SparkSession, options: EmbedOptions) -> tuple[str, str]:
    """``(dtype, device kind)`` an executor task runs ``options`` with: one task of a one-row job asks
    (the task sees the executor's GPU and CPU; the driver may have neither)."""
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField("dtype", StringType()), StructField("device", StringType())])
    device, precision, threads = options.device, options.precision, options.threads

    def probe(batches: Any) -> Any:
        import pandas as pd

        for _ in batches:
            dtype, kind = _task_precision(device, precision, threads)
            yield pd.DataFrame({"dtype": [dtype], "device": [kind]})

    row = spark.range(1, numPartitions=1).mapInPandas(probe, schema).first()
    assert row is not None
    return str(row["dtype"]), str(row["device"])


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
    checkpoint_dir: str | Staging | None = None,
    compact: bool = False,
    **kwargs: Unpack[EmbedKwargs],
) -> EnrichResult:
    """Embed the rows of ``df`` that ``output`` does not hold yet and append them to it.

    Args:
        df: the input (any table: Parquet, Delta, Hive, ...), one row per id.
        output: the output table's path (created by the first run).
        id_col: the input's unique id column (integer or string).
        columns: text column -> role (``{"body": "passage"}``); each adds ``<column><suffix>``.
        output_format: ``"parquet"`` (default) or ``"delta"`` (each batch one Delta transaction).
        commit_rows: rows per committed batch (more when a run has over 100 batches' worth): a killed run
            loses at most the batch in flight.
        partitions: tasks per batch (default: Spark's default parallelism).
        suffix: output column name suffix.
        embed_options: an :class:`~user_spark.EmbedOptions` (roles come from ``columns``). The revision
            recorded for the model is its ``model_revision``, default the hub commit or a SHA-256 of the weight
            files; ``storage`` is ``"float32"`` or ``"float16"``.
        metrics: counters to update.
        checkpoint_dir: where the rows to embed are staged (default: ``spark.checkpoint.dir``, else
            ``_user_spark_staging`` next to the output); deleted at the end.
        compact: afterwards, rewrite the output with one row per id (:func:`compact_embeddings`).
        **kwargs: :class:`~user_spark.EmbedOptions` fields on top of ``embed_options`` (``model=``, ``storage=``,
            ``precision=``, ...).

    Returns:
        :class:`EnrichResult`.

    Raises:
        ColumnError: a missing or non-string column, null ids, an id with two texts, or an output of another
            shape.
        OptionError: the output was written with another model, revision, role, storage or precision.
        OutputBusyError: another run is writing to the output.

    >>> enrich(spark.read.parquet("/lake/docs"), "/lake/docs_emb", id_col="id", columns={"body": "passage"})
    EnrichResult(output='/lake/docs_emb', rows_embedded=1200, batches=('20261124T101500Z-3f2a9c-0000',), ...)
    """
    if "role" in kwargs:
        raise OptionError("enrich takes each column's role from columns=, e.g. columns={'body': 'passage'}")
    outputs = _check_request(df, id_col, columns, output_format, commit_rows, partitions, suffix)
    spark = df.sparkSession
    metrics = metrics or EmbedMetrics.create(spark)
    config = prepare_embedding(EmbedOptions.build(coerce_options(embed_options), **kwargs), spark=spark)
    run = _Run(df, output, output_format, id_col, dict(columns), outputs, commit_rows,
               partitions or _default_partitions(spark), config.options.replace(model_revision=config.revision))
    from user_spark.pipelines.files import files

    fs = files(spark, output)
    existing = _read_existing(spark, output, output_format, fs)
    if existing is not None:  # refuse another model or role before the probe job and any other work
        _check_existing(existing, output, id_col, df.schema[id_col].dataType, run.metadata(config, None))
    precision = effective_precision(spark, run.options)
    expected = run.metadata(config, precision)
    if existing is not None:
        _check_existing(existing, output, id_col, df.schema[id_col].dataType, expected)
    with _claimed(fs, output), _staging_for(spark, checkpoint_dir, output) as staging:
        existing = _read_existing(spark, output, output_format, fs)  # what was committed before the claim
        backlog = find_backlog(df, existing, id_col=id_col, text_cols=list(columns), commit_rows=commit_rows,
                               staging=staging)
        batches = _commit_batches(backlog, run, expected, metrics)
        compacted = _compact(run, fs) if compact else None
    return EnrichResult(output, backlog.rows, tuple(batches), str(config.revision), metrics.as_dict(), precision,
                        compacted)


@dataclass(frozen=True)
class _Run:
    df: DataFrame
    output: str
    output_format: str
    id_col: str
    columns: dict[str, str]
    outputs: dict[str, str]
    commit_rows: int
    tasks: int
    options: EmbedOptions

    def metadata(self, config: EmbedConfig, precision: tuple[str, str] | None) -> dict[str, dict[str, Any]]:
        """Each output column's metadata; with ``precision`` also the effective precision and device kind."""
        out = {}
        for name, role in self.columns.items():
            meta = embedding_metadata(config.with_role(role), role)
            if precision is not None:
                meta["user_spark"].update(precision=precision[0], device=precision[1])
            out[self.outputs[name]] = meta
        return out


class _NoClaim:
    """Where this process cannot reach the output's filesystem (Spark Connect to another machine)."""

    def __enter__(self) -> None:
        logger.warning("cannot claim the output from this Spark Connect client (no filesystem access): a second "
                       "run on the same output at the same time would not be detected")

    def __exit__(self, *exc: object) -> None:
        return None


def _claimed(fs: Files | None, output: str) -> Any:
    from user_spark.pipelines.claims import RunClaim

    return _NoClaim() if fs is None else RunClaim(fs, output)


def _staging_for(spark: SparkSession, checkpoint_dir: str | Staging | None, output: str) -> Any:
    import contextlib

    staging, owned = open_staging(spark, checkpoint_dir, job="enrich", output=output)
    return staging if owned else contextlib.nullcontext(staging)


def _commit_batches(backlog: Backlog, run: _Run, expected: Mapping[str, dict[str, Any]],
                    metrics: EmbedMetrics) -> list[str]:
    from pyspark.sql import functions as F

    if backlog.rows == 0:
        logger.info("%s is up to date: nothing to embed", run.output)
        return []
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    # Small batches in fewer tasks: a nightly run of 1,000 rows on 200 cores should not write 200 tiny files.
    tasks = min(run.tasks, math.ceil(backlog.batch_rows / MIN_ROWS_PER_TASK))
    done = []
    for i in range(backlog.batches):
        batch_id = f"{stamp}-{i:04d}"
        part = backlog.frame(i).repartition(tasks)
        embedded = with_embeddings(
            part, dict(run.columns), options=run.options, output_columns=dict(run.outputs), metrics=metrics
        ).select(column(run.id_col), HASH_COL, *[column(o) for o in run.outputs.values()])
        for name, meta in expected.items():
            embedded = with_named_column(embedded, name, column(name), meta)
        logger.info("committing batch %d of %d (%s) to %s", i + 1, backlog.batches, batch_id, run.output)
        if run.output_format == "parquet":
            embedded.write.mode("error").parquet(f"{run.output.rstrip('/')}/{BATCH_COL}={batch_id}")
        else:
            (embedded.withColumn(BATCH_COL, F.lit(batch_id)).write.format(run.output_format)
             .mode("append").partitionBy(BATCH_COL).save(run.output))
        done.append(batch_id)
        faults.after_commit(len(done))  # test-only; a no-op unless USER_SPARK_TEST_FAULT is set
    return done


def current_embeddings(
    output: DataFrame, df: DataFrame, *, id_col: str, columns: Sequence[str] | Mapping[str, str]
) -> DataFrame:
    """The output rows that match ``df`` as it is now: one per id of ``df`` that has been enriched.

    Older versions of rows whose text changed since, and ids no longer in ``df``, are left out. ``columns``
    are the text columns the output was enriched with (their order does not matter). Should the output hold
    the same version twice (a compaction cut short), the latest batch's row is kept.

    >>> current_embeddings(spark.read.parquet("/lake/docs_emb"), docs, id_col="id", columns=["body"])
    DataFrame[id: bigint, content_hash: string, body_embedding: array<float>, batch: string]
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    text_cols = list(columns)
    keys = df.select(column(id_col).alias(id_col), content_hash(text_cols).alias(HASH_COL)).dropDuplicates(
        [id_col, HASH_COL])
    matching = output.join(keys, [id_col, HASH_COL], "left_semi")
    if BATCH_COL not in output.columns:
        return matching
    latest = Window.partitionBy(column(id_col), HASH_COL).orderBy(F.col(BATCH_COL).desc())
    return matching.withColumn("_n", F.row_number().over(latest)).where(F.col("_n") == 1).drop("_n")


def compact_embeddings(
    df: DataFrame,
    output: str,
    *,
    id_col: str,
    columns: Sequence[str] | Mapping[str, str],
    output_format: OutputFormat = "parquet",
) -> CompactResult:
    """Rewrite an enrichment output with one row per id: the version that matches ``df`` now, else (an id no
    longer in ``df``, or whose text changed to one never embedded) the latest committed version.

    The kept rows are written as one new batch before the old batch folders are deleted: a run cut short in
    between leaves both (:func:`current_embeddings` and :func:`enrich` read such an output correctly, and the
    next compaction finishes the job). Holds the output's claim (:mod:`user_spark.pipelines.claims`).

    Raises:
        OptionError: a Delta output (use Delta's own ``DELETE``), or an output this process cannot reach
            (Spark Connect to another machine: the old folders cannot be deleted from here).
        OutputBusyError: a run is writing to the output.

    >>> compact_embeddings(spark.read.table("docs"), "/lake/docs_emb", id_col="id", columns=["body"])
    CompactResult(rows_before=1300, rows_after=1200, batches_replaced=3)
    """
    from user_spark.pipelines.claims import RunClaim
    from user_spark.pipelines.files import files

    fs = _compactable(df.sparkSession, output, output_format)
    assert fs is not None
    with RunClaim(fs, output, what="compact"):
        return _compact(_Run(df, output, output_format, id_col, dict.fromkeys(columns, ""), {}, 0, 0,
                             EmbedOptions()), files(df.sparkSession, output))


def _compactable(spark: SparkSession, output: str, output_format: str) -> Files | None:
    from user_spark.pipelines.files import files

    if output_format != "parquet":
        raise OptionError("compact_embeddings rewrites Parquet outputs; a Delta output compacts with Delta's own "
                          "DELETE (and VACUUM) of the rows current_embeddings leaves out")
    fs = files(spark, output)
    if fs is None:
        raise OptionError(f"Compacting {output!r} deletes its old batch folders, which this Spark Connect client "
                          "cannot reach; run it from a classic session or the CLI on the cluster")
    return fs


def _compact(run: _Run, fs: Files | None) -> CompactResult:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    fs = fs or _compactable(run.df.sparkSession, run.output, run.output_format)
    assert fs is not None
    spark = run.df.sparkSession
    old = sorted(e.name for e in fs.list(run.output) if e.name.startswith(f"{BATCH_COL}="))
    if not old:
        return CompactResult(0, 0, 0)
    root = run.output.rstrip("/")
    table = spark.read.option("basePath", root).parquet(*[f"{root}/{name}" for name in old])
    keys = run.df.select(column(run.id_col).alias(run.id_col), content_hash(list(run.columns)).alias(HASH_COL))
    current = keys.dropDuplicates([run.id_col, HASH_COL]).withColumn("_current", F.lit(1))
    ranked = table.join(current, [run.id_col, HASH_COL], "left").withColumn(
        "_rank", F.row_number().over(Window.partitionBy(column(run.id_col)).orderBy(
            F.coalesce(F.col("_current"), F.lit(0)).desc(), F.col(BATCH_COL).desc())))
    kept = ranked.where(F.col("_rank") == 1).drop("_current", "_rank", BATCH_COL)
    before = table.count()
    batch_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}-compact"
    target = f"{root}/{BATCH_COL}={batch_id}"
    kept.write.mode("error").parquet(target)
    after = spark.read.parquet(target).count()
    for name in old:
        fs.delete(f"{root}/{name}")
    logger.info("compacted %s: %d rows in %d batch(es) -> %d rows in %s", run.output, before, len(old), after,
                batch_id)
    return CompactResult(before, after, len(old))
