"""Dedup's candidate step on Spark: rows partitioned by k-means cells, pairs scored inside each cell.

1. :func:`plan_cells` (driver): k-means on a sample of the rows gives ``~rows / cell_rows`` cells; the sample also
   picks each cell's leader (its most central core row, :mod:`user_spark.ops.cells`) and estimates each cell's
   copies, from which the cells above ``block_rows`` copies are split into sub-blocks.
2. :func:`cell_edges`: one map assigns each row to its nearest cell and to the cells whose boundary is within
   the margin, and writes one row per (copy, block) with the vector as float16 (half the bytes of float32);
   one shuffle groups the blocks; an Arrow UDF streams each partition's blocks, scores their pairs by chunked
   GEMMs and sends a spanning forest of the pairs at or above the threshold, the core rows' star edges to
   their leader, and one row of counts per batch.

Work per row: ``~(copies per row) x (rows of its cell)`` similarities and ``copies per row`` vectors moved, both
independent of the number of rows; the cell count grows with the rows instead (two-level above
``two_level_from`` cells, so assigning a row costs ``~sqrt(cells)`` similarities).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from user_spark.pipelines.arrow import batch_columns
from user_spark.pipelines.blocks import shuffle_partitions
from user_spark.pipelines.edges import edge_batches, edge_schema, split_edges
from user_spark.pipelines.kmeans import sample_vectors, ship
from user_spark.pipelines.vectors import ID, VEC

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

    from user_spark.ops.kmeans import Centroids

__all__ = ["CellPlan", "cell_edges", "plan_cells"]

logger = logging.getLogger(__name__)

_KEYS = ("_cell", "_lo", "_hi")
_COPY_ROW_BYTES = 64  # a copy's keys, role, id and row overhead in Spark's shuffle, next to its vector


@dataclass(frozen=True)
class CellPlan:
    """Where every row goes: the cells, the margin, and each cell's sub-blocks and leader.

    Attributes:
        centroids: the cells (flat or two-level).
        radius: distance to a cell boundary within which a row is copied into the neighbouring cell.
        max_cells: cells a row is copied into at most.
        core: cosine to its centroid from which a row is a core row (:func:`user_spark.ops.cells.core_cosine`).
        threshold: the pair threshold.
        s_o, s_c: non-core and core sub-blocks per cell (``int32``, ``k`` each).
        leaders: per cell, the id of its leader (a sampled core row), meaningful where ``has_leader``.
        estimated_copies: copies of all rows the sample predicts (sizes the shuffle).
    """

    centroids: Centroids
    radius: float
    max_cells: int
    core: float
    threshold: float
    s_o: np.ndarray
    s_c: np.ndarray
    leaders: np.ndarray
    has_leader: np.ndarray
    estimated_copies: int


def plan_cells(
    vectors: DataFrame,
    rows: int,
    *,
    threshold: float,
    margin: float,
    cell_rows: int,
    block_rows: int,
    max_cells: int,
    seed: int,
    two_level_from: int,
) -> CellPlan:
    """Train the cells on a sample (``64`` rows per cell, at least 20,000, at most ``rows``) and plan them."""
    import numpy as np

    from user_spark.ops.cells import CORE, core_cosine, pair_distance, plan_blocks, roles
    from user_spark.ops.kmeans import train

    k = max(1, -(-rows // cell_rows))
    ids, sample = sample_vectors(vectors, min(rows, max(20_000, 64 * k)), seed=seed, total=rows)
    fit = train(sample, k, seed=seed, restarts=1, max_iter=20, two_level_from=two_level_from)
    radius, core = margin * pair_distance(threshold), core_cosine(threshold)
    found, cells, sims, ranks = fit.centroids.within(sample, radius, max_cells=max_cells)
    role = roles(cells, ranks, sims, core, np.ones(fit.centroids.k, dtype=bool))
    leaders, has_leader = _leaders(ids[found], cells, sims, role == CORE, fit.centroids.k)
    role = roles(cells, ranks, sims, core, has_leader)
    scale = rows / max(len(sample), 1)
    is_core = role == CORE
    other = np.bincount(cells[~is_core], minlength=fit.centroids.k) * scale
    core_rows = np.bincount(cells[is_core], minlength=fit.centroids.k) * scale
    s_o, s_c = plan_blocks(np.ceil(other), np.ceil(core_rows), block_rows)
    fan = np.where(is_core, s_o[cells], s_o[cells] + s_c[cells])
    logger.info("dedup: %d cells (%d sampled rows), %.2f copies per row expected, %d leaders", fit.centroids.k,
                len(sample), fan.sum() / max(len(sample), 1), int(has_leader.sum()))
    return CellPlan(fit.centroids, radius, max_cells, core, threshold, s_o, s_c, leaders, has_leader,
                    math.ceil(fan.sum() * scale))


def _leaders(
    ids: np.ndarray, cells: np.ndarray, sims: np.ndarray, core: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the sampled core row nearest the centroid (ties: the first in sample order), and which cells
    have one."""
    import numpy as np

    leaders = np.empty(k, dtype=ids.dtype if len(ids) else object)
    has = np.zeros(k, dtype=bool)
    where = np.flatnonzero(core)
    order = where[np.lexsort((where, -sims[where].astype(np.float64), cells[where]))]
    first = order[np.r_[True, cells[order][1:] != cells[order][:-1]]] if len(order) else order
    leaders[cells[first]] = ids[first]
    has[cells[first]] = True
    return leaders, has


def cell_edges(vectors: DataFrame, plan: CellPlan, *, id_type: DataType, seed: int) -> tuple[DataFrame, dict[str, int]]:
    """``(src, dst)`` edges whose connected components are those of the pairs at or above the threshold that
    share a cell (plus star edges from core rows to their cell's leader), and the stage's counts: ``copies``,
    ``scored`` (similarities computed), ``found`` (pairs at or above the threshold), ``stars``."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType, ByteType, IntegerType, StructField, StructType

    copies_schema = StructType([
        StructField("_cell", IntegerType(), False), StructField("_lo", IntegerType(), False),
        StructField("_hi", IntegerType(), False), StructField("_side", IntegerType(), False),
        StructField("_role", ByteType(), False), StructField(ID, id_type, False),
        StructField(VEC, BinaryType(), False),
    ])
    shipped = ship(vectors.sparkSession, plan)

    def copy_rows(batches):  # type: ignore[no-untyped-def]
        for batch in batches:
            if batch.num_rows:
                yield _copies(batch, shipped())

    dim = len(plan.centroids.vectors[0])
    parts = shuffle_partitions(vectors.sparkSession, plan.estimated_copies, 2 * dim + _COPY_ROW_BYTES)
    hashed = vectors.select(ID, VEC, F.xxhash64(F.col(ID), F.lit(seed)).alias("_h"))
    copies = hashed.mapInArrow(copy_rows, copies_schema)
    keyed = copies.repartition(parts, *_KEYS) if parts else copies.repartition(*_KEYS)
    ordered = keyed.sortWithinPartitions(*_KEYS, "_side", "_role", ID)

    from pyspark.sql.pandas.types import to_arrow_type

    arrow_id = to_arrow_type(id_type)

    def edges(batches):  # type: ignore[no-untyped-def]
        yield from _block_edges(batches, shipped(), arrow_id)

    return split_edges(ordered.mapInArrow(edges, edge_schema(id_type)))


def _copies(batch: Any, plan: CellPlan) -> Any:
    """One Arrow batch of copies: each row in its cells, each copy in its blocks (executor side)."""
    import numpy as np
    import pyarrow as pa

    from user_spark.embedding.storage import to_arrow
    from user_spark.ops.blocks import unit_rows
    from user_spark.ops.cells import expand, roles
    from user_spark.pipelines.arrow import vector_matrix

    x = unit_rows(vector_matrix(batch.column(VEC)))
    rows, cells, sims, ranks = plan.centroids.within(x, plan.radius, max_cells=plan.max_cells)
    role = roles(cells, ranks, sims, plan.core, plan.has_leader)
    hashes = batch.column("_h").to_numpy(zero_copy_only=False).view(np.uint64)[rows]
    copy, lo, hi, side = expand(cells, role, hashes, plan.s_o, plan.s_c)
    source = rows[copy]
    return pa.RecordBatch.from_arrays(
        [
            pa.array(cells[copy], pa.int32()), pa.array(lo, pa.int32()), pa.array(hi, pa.int32()),
            pa.array(side, pa.int32()), pa.array(role[copy], pa.int8()),
            batch.column(ID).take(pa.array(source)),
            to_arrow(x[source], np.ones(len(source), dtype=bool), "float16"),
        ],
        names=[*_KEYS, "_side", "_role", ID, VEC],
    )


def _block_edges(batches: Any, plan: CellPlan, arrow_id: Any) -> Any:
    """The edges and counts of a partition's blocks, streamed whole (executor side)."""
    import numpy as np

    from user_spark.ops.blocks import unit_rows
    from user_spark.ops.cells import CORE, cells_forest
    from user_spark.ops.forest import BlockCounts
    from user_spark.ops.streams import block_bounds, whole_blocks

    names = [*_KEYS, "_side", "_role", ID]
    counts = BlockCounts()
    for cols in whole_blocks((batch_columns(b, names, VEC) for b in batches), list(_KEYS)):
        cell, lo, hi = cols["_cell"], cols["_lo"], cols["_hi"]
        starts, splits = block_bounds(cell, lo, hi, np.where(cols["_side"] == 0, lo, hi))
        role = cols["_role"]
        roots, members = cells_forest(cols[ID], unit_rows(cols[VEC]), role, starts, splits, plan.threshold, counts)
        star = (role == CORE) & (lo == 0)
        leaders = plan.leaders[cell[star]]
        linked = leaders != cols[ID][star]
        counts.stars += int(linked.sum())
        yield from edge_batches(np.concatenate([roots, leaders[linked]]),
                                np.concatenate([members, cols[ID][star][linked]]), None, arrow_id)
    yield from edge_batches([], [], counts, arrow_id)
