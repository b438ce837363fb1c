"""Similarity join: the top-k right rows for each left row by cosine, exact (blocked GEMM) or approximate (IVF).

- ``method="exact"``: the right side cut into shards that one task holds, the left side into tiles, as many
  tasks as the cluster runs at once (:func:`user_spark.ops.tiles.plan_tiles`); each task streams its left
  tile past its shard (:mod:`user_spark.pipelines.knn`).
- ``method="ivf"``: coarse centroids trained on a bounded sample of the right side; each right row moves once,
  to the shard of its nearest list, and each left row to the shards holding its ``nprobe`` nearest lists
  (:mod:`user_spark.pipelines.ivf`). Scores inside the probed lists are exact.

Nothing is collected to the driver but counts (and, for IVF, a training sample and the centroids). Embedded
text is staged as Parquet under a working directory (:mod:`user_spark.pipelines.staging`), so a lost executor
does not lose it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions, coerce_options
from user_spark.embedding.udf import EmbedConfig
from user_spark.errors import ColumnError, OptionError
from user_spark.pipelines.staging import Staging, open_staging
from user_spark.pipelines.vectors import (
    ID,
    VEC,
    SideStats,
    check_vector_source,
    prepare_vectors,
    require_vectors,
    side_stats,
    vector_frame,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

__all__ = ["BROADCAST_BYTES", "SHARD_BYTES", "similarity_join"]

logger = logging.getLogger(__name__)

Method = Literal["exact", "ivf"]

#: Float32 vectors one task holds of the right side (a shard) unless ``block_rows`` says otherwise.
SHARD_BYTES = 256 << 20

#: A right side of at most this many bytes of float32 vectors is collected and sent to every task rather than
#: shuffled into tiles: no shuffle, no sort, one job fewer. It travels with the task's function (Spark
#: broadcasts a function over 1 MiB; on Connect it rides in the plan, whose messages are capped at 128 MiB).
BROADCAST_BYTES = 64 << 20


class _Side:
    """One side's input columns, as given."""

    def __init__(self, df: DataFrame, id_col: str, text_col: str | None, embedding_col: str | None,
                 what: str) -> None:
        self.df, self.id_col, self.text_col, self.embedding_col, self.what = df, id_col, text_col, embedding_col, what

    @property
    def id_type(self) -> DataType:
        return self.df.schema[self.id_col].dataType

    def check_schema(self) -> None:
        require_vectors(self.text_col, self.embedding_col, f"similarity_join's {self.what} side",
                        text_arg=f"{self.what}_text_col=", embedding_arg=f"{self.what}_embedding_col=")
        check_vector_source(self.df, self.id_col, self.text_col, self.embedding_col)

    def stats(self, check_ids: bool) -> SideStats | None:
        """One job: ids unique, vectors counted and equally long. ``None``: text, nothing to check."""
        if not check_ids and self.embedding_col is None:
            return None
        return side_stats(self.df, self.id_col, embedding_col=self.embedding_col, check_ids=check_ids,
                          what=f"{self.what} side")


def _check_options(k: int, method: str, min_score: float | None, block_rows: int | None, nlist: int | None,
                   nprobe: int | None, left_id_col: str, right_id_col: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise OptionError(f"k must be a positive integer, got {k!r}")
    if method not in ("exact", "ivf"):
        raise OptionError(f"method must be 'exact' or 'ivf', got {method!r}")
    if min_score is not None and not -1.0 <= min_score <= 1.0:
        raise OptionError(f"min_score must be a cosine in [-1, 1], got {min_score!r}")
    for name, value in (("block_rows", block_rows), ("nlist", nlist), ("nprobe", nprobe)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise OptionError(f"{name} must be a positive integer, got {value!r}")
    for name in {left_id_col, right_id_col}:
        if name in ("score", "rank"):
            raise ColumnError(f"Id column may not be named {name!r} (an output column); rename it")


def _vector_counts(vec: DataFrame, known: SideStats | None) -> tuple[int, int | None]:
    """Rows with a vector and their length: from the input's stats, or for embedded text from the staged
    frame (a count of Parquet rows reads no vector) and the embedding column's metadata."""
    from pyspark.sql import functions as F

    if known is not None and known.dim is not None:
        return known.vectors, known.dim
    rows = vec.count()
    dim = vec.schema[VEC].metadata.get("user_spark", {}).get("dimension")
    if dim is None and rows:  # metadata lost on the way (it should not be): one vector tells
        from pyspark.sql.types import BinaryType

        half = isinstance(vec.schema[VEC].dataType, BinaryType)  # float16: 2 bytes a value
        first = vec.select(F.length(VEC) / 2 if half else F.size(VEC)).first()
        dim = None if first is None else first[0]
    return rows, None if dim is None else int(dim)


def _check_dims(left: int | None, right: int | None) -> None:
    if left is not None and right is not None and left != right:
        raise ColumnError(f"The left side's vectors have {left} values and the right side's {right}; both sides "
                          "must come from the same model")


@dataclass(frozen=True)
class _Plan:
    k: int
    min_score: float | None
    method: str
    nlist: int | None
    nprobe: int | None
    exclude_self: bool
    block_rows: int | None
    seed: int
    max_train_rows: int | None
    self_join: bool


Embedding = EmbedOptions | EmbedConfig


def _side_embedding(side: _Side, role: str, prepared: Embedding) -> Embedding:
    """What embeds one side's text, in its role (the role is checked against the model's prompts only for a
    side that embeds)."""
    if side.embedding_col is None and isinstance(prepared, EmbedConfig):
        return prepared.with_role(role)
    return prepared


def _known_dim(side: _Side, stats: SideStats | None, prepared: Embedding) -> int | None:
    """A side's vector length before any embedding: its column's (from the stats job) or the model's."""
    if side.embedding_col is not None:
        return None if stats is None else stats.dim
    return prepared.spec.dimension if isinstance(prepared, EmbedConfig) else None


def _vectors(side: _Side, staging: Staging | None, options: Embedding, metrics: EmbedMetrics | None) -> DataFrame:
    return vector_frame(side.df, side.id_col, text_col=side.text_col, embedding_col=side.embedding_col,
                        options=options, metrics=metrics, check_lengths=False, staging=staging, keep_float16=True)


def _same_vector_type(lvec: DataFrame, rvec: DataFrame) -> tuple[DataFrame, DataFrame]:
    """float16 on one side only: decode it, so both sides travel as one column type."""
    from pyspark.sql.types import BinaryType

    from user_spark.embedding.storage import decode_float16

    ltype, rtype = lvec.schema[VEC].dataType, rvec.schema[VEC].dataType
    if ltype == rtype:
        return lvec, rvec
    if isinstance(ltype, BinaryType):
        lvec = lvec.withColumn(VEC, decode_float16(VEC))
    if isinstance(rtype, BinaryType):
        rvec = rvec.withColumn(VEC, decode_float16(VEC))
    return lvec, rvec


def _join(lside: _Side, rside: _Side, stats: tuple[SideStats | None, SideStats | None], staging: Staging | None,
          options: tuple[Embedding, Embedding], metrics: EmbedMetrics | None, plan: _Plan) -> DataFrame:
    from user_spark.pipelines.knn import TopkSpec

    lvec = _vectors(lside, staging, options[0], metrics)
    rvec = lvec if plan.self_join else _vectors(rside, staging, options[1], metrics)
    n_left, ldim = _vector_counts(lvec, stats[0])
    n_right, rdim = (n_left, ldim) if plan.self_join else _vector_counts(rvec, stats[1])
    _check_dims(ldim, rdim)
    spec = TopkSpec(plan.k, plan.min_score, plan.exclude_self, lside.id_type, rside.id_type, final=True)
    if n_left == 0 or n_right == 0 or ldim is None:
        logger.info("similarity join: %d left and %d right rows with a vector: no pairs", n_left, n_right)
        return _empty(lvec.sparkSession, spec)
    lvec, rvec = _same_vector_type(lvec, rvec)
    if plan.method == "exact":
        return _exact(lvec, rvec, (n_left, n_right, ldim), plan.block_rows, spec)
    from user_spark.pipelines.ivf import ivf_topk

    return ivf_topk(lvec, rvec, (n_left, n_right, ldim), spec, nlist=plan.nlist, nprobe=plan.nprobe,
                    seed=plan.seed, max_train_rows=plan.max_train_rows, shard_bytes=_shard_bytes(plan.block_rows, ldim),
                    parallelism=_parallelism(lvec.sparkSession), self_join=plan.self_join)


def _shard_bytes(block_rows: int | None, dim: int) -> int:
    return SHARD_BYTES if block_rows is None else block_rows * dim * 4


def _parallelism(spark: SparkSession) -> int:
    from user_spark.connect import default_parallelism
    from user_spark.pipelines.frames import shuffle_partitions_setting

    return default_parallelism(spark) or shuffle_partitions_setting(spark)


def _exact(lvec: DataFrame, rvec: DataFrame, sizes: tuple[int, int, int], block_rows: int | None,
           spec: Any) -> DataFrame:
    """Exact top-k: a small right side sent to every task (:data:`BROADCAST_BYTES`), else shards x tiles, one
    task each (:func:`user_spark.ops.tiles.plan_tiles`)."""
    from dataclasses import replace

    from pyspark.sql import functions as F

    from user_spark.ops.tiles import plan_tiles, task_count
    from user_spark.pipelines.knn import LIST, PROBES, TILE, broadcast_topk, tile_rows, tile_topk

    n_left, n_right, dim = sizes
    parallelism = _parallelism(lvec.sparkSession)
    if n_right * dim * 4 <= min(BROADCAST_BYTES, _shard_bytes(block_rows, dim)):
        from user_spark.pipelines.arrow import collect_arrow, vector_matrix

        table = collect_arrow(rvec.select(ID, VEC))
        tasks = task_count(n_left, n_right, dim, parallelism)
        logger.info("exact join: %d x %d rows of %d-d, the right side sent to %d task(s)", n_left, n_right, dim,
                    tasks)
        return broadcast_topk(lvec.repartition(tasks) if tasks > 1 else lvec,
                              table.column(ID).to_numpy(), vector_matrix(table.column(VEC)), spec)
    plan = plan_tiles(n_left, n_right, dim, parallelism, _shard_bytes(block_rows, dim))
    logger.info("exact join: %d x %d rows of %d-d, %d right shard(s) x %d left tile(s)", n_left, n_right, dim,
                plan.right_shards, plan.left_tiles)
    shards, tiles = plan.right_shards, plan.left_tiles

    def part(count: int, salt: int) -> Any:
        return F.lit(0) if count == 1 else F.pmod(F.xxhash64(F.col(ID), F.lit(salt)), F.lit(count))

    def every(count: int) -> Any:
        return F.lit(0) if count == 1 else F.explode(F.sequence(F.lit(0), F.lit(count - 1)))

    # right row in shard s goes to tiles s*tiles + t for every left tile t; left row in tile t to r*tiles + t
    right = rvec.select(ID, VEC, part(shards, 7).alias("_s"), every(tiles).alias("_t"))
    left = lvec.select(ID, VEC, every(shards).alias("_s"), part(tiles, 11).alias("_t"))
    right = right.select(ID, VEC, (F.col("_s") * tiles + F.col("_t")).cast("int").alias(TILE), F.lit(0).alias(LIST))
    left = left.select(ID, VEC, (F.col("_s") * tiles + F.col("_t")).cast("int").alias(TILE),
                       F.lit(None).cast("array<int>").alias(PROBES))
    spec = replace(spec, final=shards == 1)
    return tile_topk(tile_rows(left, right, spec), plan.tiles, spec)


def _empty(spark: SparkSession, spec: Any) -> DataFrame:
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    from user_spark.pipelines.knn import LID, RID

    schema = StructType([
        StructField(LID, spec.left_id_type, False), StructField(RID, spec.right_id_type, False),
        StructField("score", FloatType(), False), StructField("rank", IntegerType(), False),
    ])
    return spark.createDataFrame([], schema)


def similarity_join(
    left: DataFrame,
    right: DataFrame | None = None,
    *,
    left_id_col: str,
    right_id_col: str | None = None,
    left_text_col: str | None = None,
    right_text_col: str | None = None,
    left_embedding_col: str | None = None,
    right_embedding_col: str | None = None,
    k: int = 10,
    min_score: float | None = None,
    method: Method = "exact",
    nlist: int | None = None,
    nprobe: int | None = None,
    exclude_self: bool | None = None,
    block_rows: int | None = None,
    seed: int = 0,
    max_train_rows: int | None = None,
    model: str | None = None,
    check_ids: bool = True,
    embed_options: EmbedOptions | Mapping[str, Any] | None = None,
    metrics: EmbedMetrics | None = None,
    checkpoint_dir: str | Staging | None = None,
) -> DataFrame:
    """The ``k`` most similar right rows of every left row.

    Args:
        left, right: the two sides; ``right=None`` joins ``left`` with itself (self-join), leaving out each
            row's match with itself unless ``exclude_self=False``.
        left_id_col, right_id_col: unique ids (``right_id_col`` defaults to ``left_id_col``).
        left_text_col, right_text_col: text to embed, left as ``query``, right as ``passage`` (a self-join
            embeds once, as ``query``).
        left_embedding_col, right_embedding_col: existing vectors instead of text (``array<float>``,
            ``array<double>``, or float16 ``binary``, which stays float16 on the wire).
        k: matches per left row. min_score: leave out matches below this cosine.
        method: ``"exact"`` (blocked GEMM) or ``"ivf"`` (approximate; ``nlist`` lists, ``nprobe`` probed;
            defaults in :func:`user_spark.ops.ivf.default_nlist` / ``default_nprobe``).
        block_rows: most right rows one task holds (default: 256 MiB of float32 vectors).
        seed: seed of the IVF sample and k-means. max_train_rows: IVF training sample size cap.
        model: model for the text columns (default ``deepvk/USER-base``); overrides ``embed_options.model``.
        check_ids: check ids are unique and not null (one pass over each side).
        embed_options: an :class:`~user_spark.EmbedOptions` for the text columns (roles as above).
        metrics: counters of the texts embedded.
        checkpoint_dir: where embedded text is staged (default: ``spark.checkpoint.dir``, or a temp folder on
            a local master); or a :class:`~user_spark.Staging` whose ``with`` block decides when the files
            go. Otherwise they are deleted when Python exits.

    Returns:
        ``<left id>, <right id>, score (float cosine), rank (1 = best)``; ties go to the smaller right id.
        The id columns keep the inputs' names; if both sides use the same name, the right one gets ``_right``.
        A side with no vectors (empty, or all text null) gives no rows, for both methods.

    Raises:
        ColumnError: a missing or mistyped column, duplicate ids, vectors of different lengths.
        OptionError: ``k < 1``, an unknown method, ``min_score`` outside [-1, 1], bad ``nlist``/``nprobe``.

    >>> similarity_join(queries, passages, left_id_col="qid", right_id_col="pid", left_text_col="question",
    ...                 right_text_col="passage", k=10)  # doctest: +SKIP
    DataFrame[qid: bigint, pid: bigint, score: float, rank: int]
    """
    self_join = right is None
    right_id_col = right_id_col or left_id_col
    _check_options(k, method, min_score, block_rows, nlist, nprobe, left_id_col, right_id_col)
    options = coerce_options(embed_options, model=model)
    exclude_self = self_join if exclude_self is None else exclude_self
    lside = _Side(left, left_id_col, left_text_col, left_embedding_col, "left")
    rside = lside if right is None else _Side(right, right_id_col, right_text_col, right_embedding_col, "right")
    for side in {id(lside): lside, id(rside): rside}.values():
        side.check_schema()
    if exclude_self and lside.id_type != rside.id_type:
        raise ColumnError(f"exclude_self compares ids, but they differ in type: {lside.id_type.simpleString()} "
                          f"and {rside.id_type.simpleString()}")
    embeds = lside.embedding_col is None or rside.embedding_col is None
    prepared = prepare_vectors(left.sparkSession, options, embeds)
    sides = (_side_embedding(lside, "query", prepared), _side_embedding(rside, "passage", prepared))
    lstats = lside.stats(check_ids)
    rstats = lstats if self_join else rside.stats(check_ids)
    _check_dims(_known_dim(lside, lstats, prepared), _known_dim(rside, rstats, prepared))
    plan = _Plan(k, min_score, method, nlist, nprobe, exclude_self, block_rows, seed, max_train_rows, self_join)
    staging, owned = open_staging(left.sparkSession, checkpoint_dir, job="join") if embeds else (None, False)
    try:
        pairs = _join(lside, rside, (lstats, rstats), staging, sides, metrics, plan)
    except BaseException:
        if owned and staging is not None:
            staging.close()
        raise
    # An owned staging stays open: the result reads the staged embeddings (deleted when Python exits).
    right_out = f"{right_id_col}_right" if right_id_col == left_id_col else right_id_col
    from pyspark.sql import functions as F

    from user_spark.pipelines.knn import LID, RID

    return pairs.select(F.col(LID).alias(left_id_col), F.col(RID).alias(right_out), "score", "rank")
