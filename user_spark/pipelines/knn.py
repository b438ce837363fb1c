"""Top-k joins on Spark: the right side cut into tiles that tasks hold, the left side streamed past them.

Both methods of :func:`user_spark.similarity_join` run through :func:`tile_topk`:

- each right row goes to the tiles that must hold it (exact: one per left tile; IVF: the one shard of its
  list), with its IVF list (exact: list 0); each tile is one shuffle partition
  (:func:`user_spark.ops.tiles.partition_keys`), so tiles never share a task;
- each left row goes to the tiles it must meet (exact: its left tile in every right shard; IVF: the shards
  that hold its probed lists, with those lists);
- the partition is sorted so a tile's right rows come first, by id; an Arrow UDF holds them as one matrix
  and streams the left rows past it in Arrow batches (a blocked GEMM and a running top-k,
  :mod:`user_spark.ops.topk`): a task's memory is one tile's right rows plus one batch, never ``N x M``;
- when every left row meets one tile, the task ranks its final top k; otherwise the candidates from each
  tile are merged by :func:`merge_topk`.

A right side small enough to send to every task (:func:`broadcast_topk`) skips the shuffle: it is collected
once, shipped with the task's function (Spark broadcasts a large function), and the left side's partitions
stream past it where they are.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from user_spark.pipelines.arrow import vector_matrix
from user_spark.pipelines.vectors import ID, VEC

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

__all__ = [
    "LID", "LIST", "PROBES", "RID", "SIDE", "TILE", "TopkSpec", "broadcast_topk", "merge_topk", "tile_rows",
    "tile_topk",
]

logger = logging.getLogger(__name__)

TILE, SIDE, LIST, PROBES = "_tile", "_side", "_list", "_probes"
LID, RID = "_lid", "_rid"
_KEY = "_key"
_RIGHT, _LEFT = 0, 1


@dataclass(frozen=True)
class TopkSpec:
    """What every task needs: ``k``, the score floor, whether a row skips the right row of its own id, the
    id types, and whether a task's results are final (each left row meets one tile) or candidates."""

    k: int
    min_score: float | None
    exclude_same_id: bool
    left_id_type: DataType
    right_id_type: DataType
    final: bool


def _padded(column: pa.Array) -> np.ndarray:
    """Lists of IVF list numbers of different lengths as one ``(rows, longest)`` matrix, ``-1`` after the end."""
    import numpy as np

    offsets = column.offsets.to_numpy()
    flat = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]].astype(np.int64)
    sizes = np.diff(offsets)
    out = np.full((len(sizes), int(sizes.max()) if len(sizes) else 0), -1, dtype=np.int64)
    out[np.arange(out.shape[1]) < sizes[:, None]] = flat
    return out


class _Tile:
    """One tile's right rows: ``ids`` ascending, unit vectors list by list (by id within a list: with one
    list, in id order), and where each IVF list's rows are."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        import numpy as np

        from user_spark.ops.blocks import unit_rows
        from user_spark.ops.ivf import ListIndex

        self.ids = np.concatenate([p[0] for p in parts])
        self.lists = ListIndex(np.concatenate([p[2] for p in parts]))
        vecs = unit_rows(np.concatenate([p[1] for p in parts]))
        self.vecs = vecs if self.lists.identity else vecs[self.lists.order]


def _ranked(lids: np.ndarray, rids: np.ndarray, scores: np.ndarray, spec: TopkSpec) -> pa.RecordBatch:
    """Results as Arrow: ``(_lid, _rid, score, rank)``; the rows of each left id are consecutive, best first."""
    import numpy as np
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type

    columns = [pa.array(lids, type=to_arrow_type(spec.left_id_type)),
               pa.array(rids, type=to_arrow_type(spec.right_id_type)), pa.array(scores, type=pa.float32())]
    names = [LID, RID, "score"]
    if spec.final:
        starts = np.r_[True, lids[1:] != lids[:-1]] if len(lids) else np.zeros(0, dtype=bool)
        first = np.maximum.accumulate(np.where(starts, np.arange(len(lids)), 0))
        columns.append(pa.array((np.arange(len(lids)) - first + 1).astype(np.int32)))
        names.append("rank")
    return pa.RecordBatch.from_arrays(columns, names=names)


def _score(tile: _Tile, lids: np.ndarray, lvecs: np.ndarray, probes: np.ndarray | None,
           spec: TopkSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(left ids, right ids, scores)``: each left row's best ``k`` in the tile, rows in their order."""
    from user_spark.ops.blocks import unit_rows

    lvecs = unit_rows(lvecs)
    if probes is None:
        from user_spark.ops.topk import block_topk

        return block_topk(lids, lvecs, tile.ids, tile.vecs, spec.k, min_score=spec.min_score,
                          exclude_same_id=spec.exclude_same_id)
    from user_spark.ops.ivf import scan_lists

    rows, cols, scores = scan_lists(
        lvecs, probes, tile.vecs, tile.lists, spec.k, min_score=spec.min_score,
        exclude=(lids, tile.ids) if spec.exclude_same_id else None,
    )
    return lids[rows], tile.ids[cols], scores


def _stream(batches: Iterable[pa.RecordBatch], spec: TopkSpec) -> Iterator[pa.RecordBatch]:
    """The task: collect each tile's right rows, then score its left rows batch by batch as they come."""
    import numpy as np

    tile_key: int | None = None
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    tile: _Tile | None = None
    for batch in batches:
        keys = batch.column(_KEY).to_numpy()
        cuts = np.r_[0, np.flatnonzero(keys[1:] != keys[:-1]) + 1, len(keys)]
        for lo, hi in itertools.pairwise(cuts):
            if keys[lo] != tile_key:
                tile_key, parts, tile = int(keys[lo]), [], None
            run = batch.slice(int(lo), int(hi - lo))
            sides = run.column(SIDE).to_numpy()
            split = int(np.searchsorted(sides, _LEFT))  # right rows first (sorted by side)
            if split:
                right = run.slice(0, split)
                parts.append((right.column(RID).to_numpy(zero_copy_only=False), vector_matrix(right.column(VEC)),
                              right.column(LIST).to_numpy()))
            if split == run.num_rows:
                continue
            if tile is None:
                if not parts:  # left rows whose tile holds no right rows (IVF never sends them; exact: none)
                    continue
                tile, parts = _Tile(parts), []
            left = run.slice(split)
            probes = None if left.column(PROBES).null_count == len(left) else _padded(left.column(PROBES))
            found = _score(tile, left.column(LID).to_numpy(zero_copy_only=False), vector_matrix(left.column(VEC)),
                           probes, spec)
            if len(found[0]):
                yield _ranked(*found, spec)


def tile_rows(left: DataFrame, right: DataFrame, spec: TopkSpec) -> DataFrame:
    """The rows :func:`tile_topk` takes, from a left frame ``(_id, _vec, _tile, _probes)`` (one row per tile
    the left row meets; ``_probes``: the IVF lists to scan there, null for all) and a right frame
    ``(_id, _vec, _tile, _list)`` (one row per tile that holds the right row)."""
    from pyspark.sql import functions as F

    return right.select(
        TILE, F.lit(_RIGHT).cast("byte").alias(SIDE), F.lit(None).cast(spec.left_id_type).alias(LID),
        F.col(ID).alias(RID), VEC, F.col(LIST).cast("int").alias(LIST), F.lit(None).cast("array<int>").alias(PROBES),
    ).unionByName(left.select(
        TILE, F.lit(_LEFT).cast("byte").alias(SIDE), F.col(ID).alias(LID),
        F.lit(None).cast(spec.right_id_type).alias(RID), VEC, F.lit(None).cast("int").alias(LIST),
        F.col(PROBES).cast("array<int>").alias(PROBES),
    ))


def tile_topk(rows: DataFrame, tiles: int, spec: TopkSpec) -> DataFrame:
    """``(_lid, _rid, score, rank)``, each left row's best ``k`` right rows by cosine.

    Args:
        rows: ``(_tile, _side, _lid, _rid, _vec, _list, _probes)`` (:func:`tile_rows`): right rows
            (``_side`` 0, ``_rid`` and ``_list`` set) and left rows (``_side`` 1, ``_lid`` and ``_probes``).
        tiles: tiles in all (``_tile`` in ``[0, tiles)``), one task each.
        spec: see :class:`TopkSpec`; when not ``final``, candidates are merged across tiles.
    """
    from pyspark.sql import functions as F

    from user_spark.ops.tiles import partition_keys

    lookup = F.array(*[F.lit(k) for k in partition_keys(tiles)])
    keyed = rows.withColumn(_KEY, F.element_at(lookup, F.col(TILE) + 1).cast("int")).drop(TILE)
    laid = keyed.repartition(tiles, _KEY).sortWithinPartitions(_KEY, SIDE, RID, LID)

    def run(batches: Iterable[Any]) -> Iterator[Any]:
        return _stream(batches, spec)

    found = laid.mapInArrow(run, _result_schema(spec))
    return found if spec.final else merge_topk(found, spec.k)


def _result_schema(spec: TopkSpec) -> Any:
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    fields = [StructField(LID, spec.left_id_type, False), StructField(RID, spec.right_id_type, False),
              StructField("score", FloatType(), False)]
    if spec.final:
        fields.append(StructField("rank", IntegerType(), False))
    return StructType(fields)


def broadcast_topk(left: DataFrame, right_ids: np.ndarray, right_vecs: np.ndarray, spec: TopkSpec) -> DataFrame:
    """``(_lid, _rid, score, rank)``, each left row's best ``k`` of a right side held by every task.

    Args:
        left: ``(_id, _vec)``; each partition is one task, scored batch by batch, nothing shuffled.
        right_ids, right_vecs: the whole right side (collected on the driver), in any order.
        spec: see :class:`TopkSpec` (``final`` must be true: every left row meets every right row here).
    """
    import numpy as np

    order = np.argsort(right_ids, kind="stable")
    ids, vecs = right_ids[order], np.ascontiguousarray(right_vecs[order], dtype=np.float32)

    def run(batches: Iterable[Any]) -> Iterator[Any]:
        tile = _Tile([(ids, vecs, np.zeros(len(ids), dtype=np.int32))])
        for batch in batches:
            if batch.num_rows:
                found = _score(tile, batch.column(ID).to_numpy(zero_copy_only=False),
                               vector_matrix(batch.column(VEC)), None, spec)
                if len(found[0]):
                    yield _ranked(*found, spec)

    return left.select(ID, VEC).mapInArrow(run, _result_schema(spec))


def merge_topk(candidates: DataFrame, k: int) -> DataFrame:
    """Keep each left id's ``k`` best candidates across tiles: ``(_lid, _rid, score, rank)``.

    Ties in score go to the smaller right id; memory per left id is bounded by (tiles met x k) candidates.
    """
    from pyspark.sql import functions as F

    best = candidates.groupBy(LID).agg(
        F.slice(
            F.sort_array(F.collect_list(F.struct((-F.col("score")).alias("neg"), F.col(RID).alias("rid")))), 1, k
        ).alias("_best")
    )
    return best.select(LID, F.posexplode("_best").alias("_pos", "_c")).select(
        LID,
        F.col("_c.rid").alias(RID),
        (-F.col("_c.neg")).cast("float").alias("score"),
        (F.col("_pos") + 1).cast("int").alias("rank"),
    )
