"""Dedup inside k-means cells (pure numpy, no Spark): which copies of a row meet in which block, and the
spanning forest of the pairs at or above the threshold.

Every row goes to its nearest cell and to the cells whose boundary is within the margin
(:meth:`user_spark.ops.kmeans.Centroids.within`). Each copy has a role in its cell:

- ``CORE``: a copy in the row's nearest cell at cosine ``>= sqrt((1 + t) / 2)`` from the centroid (t: the
  threshold), in a cell with a *leader* (a core row picked on the sample). Any two core rows of a cell are at
  cosine ``>= t``: their angles to the centroid add up to at most the threshold's angle. So core rows are linked
  to the leader (a star, one edge each) and core pairs are never scored: a dense group of ``G`` near-identical
  rows costs ``G`` edges, not ``G^2`` similarities.
- ``PRIMARY``: any other copy in the row's nearest cell.
- ``SECONDARY``: a copy in a cell that is not the row's nearest.

A cell scores every pair of its copies except core-core (linked already) and secondary-secondary (such a pair
meets in the nearest cell of one of its rows, as a primary there). A cell is one block unless its copies
exceed ``block_rows``: then its non-core copies are cut into ``s_o`` sub-blocks and its core copies into
``s_c``, by a hash of the id, and blocks pair them up (:func:`expand`); a non-core copy is then sent
``s_o + s_c`` times, a core copy ``s_o`` times.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from user_spark.ops.forest import BlockCounts, spanning_forest

__all__ = [
    "CORE",
    "PRIMARY",
    "SECONDARY",
    "cells_forest",
    "core_cosine",
    "expand",
    "pair_distance",
    "plan_blocks",
    "roles",
]

CORE, PRIMARY, SECONDARY = 0, 1, 2
CHUNK_ROWS = 1024


def pair_distance(threshold: float) -> float:
    """Euclidean distance of two unit vectors at cosine ``threshold``: ``sqrt(2 - 2t)``."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * threshold))


def core_cosine(threshold: float) -> float:
    """Cosine to a centroid from which two rows are always at ``>= threshold`` of each other: ``cos(a) >= c``
    for both means an angle of at most ``2 arccos c`` between them, and ``cos(2 arccos c) = 2c^2 - 1 = t``.
    A millionth more absorbs float32 rounding."""
    return math.sqrt((1.0 + threshold) / 2.0) + 1e-6


def roles(
    cells: np.ndarray, ranks: np.ndarray, sims: np.ndarray, core: float, has_leader: np.ndarray
) -> np.ndarray:
    """The role of each copy: secondary for rank > 0, core for a rank-0 copy at ``sim >= core`` in a cell
    with a leader (``has_leader[cell]``), else primary."""
    out = np.where(ranks > 0, SECONDARY, PRIMARY).astype(np.int8)
    out[(ranks == 0) & (sims.astype(np.float64) >= core) & has_leader[cells]] = CORE
    return out


def plan_blocks(other: np.ndarray, core: np.ndarray, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-blocks per cell from (estimated) copy counts: ``(s_o, s_c)``, ``ceil(count / block_rows)`` each, and
    at least one non-core sub-block (an estimate of zero may still meet rows)."""
    s_o = np.maximum(1, -(-np.asarray(other, dtype=np.int64) // block_rows))
    s_c = -(-np.asarray(core, dtype=np.int64) // block_rows)
    return s_o.astype(np.int32), s_c.astype(np.int32)


def expand(
    cells: np.ndarray, role: np.ndarray, hashes: np.ndarray, s_o: np.ndarray, s_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The blocks each copy is sent to: ``(copy, lo, hi, side)``, flat, one entry per (copy, block).

    A cell's non-core copies fall in sub-block ``u = hash mod s_o`` and meet every sub-block ``v`` in
    ``[0, s_o + s_c)`` in block ``(min(u, v), max(u, v))``; core copies fall in ``s_o + hash mod s_c`` and meet
    the non-core sub-blocks only, in blocks ``(v, s_o + c)``. ``side`` is 0 for the copy's sub-block ``lo``
    (the first side of a two-sided block, or a one-sided block ``lo == hi``), 1 for ``hi``. ``s_o >= 1``.

    >>> expand(np.array([0, 0]), np.array([PRIMARY, CORE]), np.array([5, 6]), np.array([1]), np.array([1]))
    (array([0, 0, 1]), array([0, 0, 0]), array([0, 1, 1]), array([0, 0, 1]))
    """
    so, sc = s_o[cells].astype(np.int64), s_c[cells].astype(np.int64)
    h = np.asarray(hashes, dtype=np.uint64)
    is_core = role == CORE
    sub = np.where(is_core, so + (h % np.maximum(sc, 1).astype(np.uint64)).astype(np.int64),
                   (h % np.maximum(so, 1).astype(np.uint64)).astype(np.int64))
    fan = np.where(is_core, so, so + sc)
    copy = np.repeat(np.arange(len(cells)), fan)
    v = np.arange(len(copy)) - np.repeat(np.cumsum(fan) - fan, fan)
    u = sub[copy]
    core_copy = is_core[copy]
    lo = np.where(core_copy, v, np.minimum(u, v))
    hi = np.where(core_copy, u, np.maximum(u, v))
    side = np.where(u == lo, 0, 1)
    return copy, lo, hi, side


def _side_ranges(role: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Ends of the core and primary runs of a side sorted by role: ``[lo, a)`` core, ``[a, b)`` primary."""
    seg = role[lo:hi]
    return lo + int(np.searchsorted(seg, PRIMARY)), lo + int(np.searchsorted(seg, SECONDARY))


def _gemm_hits(
    vecs: np.ndarray, rows: range, cols: tuple[int, int], threshold: float, upper: bool, counts: BlockCounts
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Positions ``(i, j)`` with ``i`` in ``rows``, ``j`` in ``[cols)`` and similarity ``>= threshold``, chunk
    by chunk; ``upper``: only ``j > i`` (columns before a chunk's first row are not computed)."""
    for start in range(rows.start, rows.stop, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows.stop)
        first = max(cols[0], start + 1) if upper else cols[0]
        if first >= cols[1]:
            continue
        scores = vecs[start:stop] @ vecs[first : cols[1]].T
        counts.scored += scores.size
        if upper:
            scores[np.arange(first, cols[1])[None, :] <= np.arange(start, stop)[:, None]] = -np.inf
        r, c = np.nonzero(scores >= threshold)
        counts.found += len(r)
        yield start + r, first + c


def _block_hits(
    vecs: np.ndarray, role: np.ndarray, lo: int, mid: int, hi: int, threshold: float, counts: BlockCounts
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs of one block at or above ``threshold``, leaving out core-core and secondary-secondary pairs.
    ``mid < 0``: one side ``[lo, hi)``; else sides ``[lo, mid)`` and ``[mid, hi)``. Sides are sorted by role."""
    if mid < 0:
        core_end, primary_end = _side_ranges(role, lo, hi)
        # core and primary rows against the primary and secondary rows after them
        yield from _gemm_hits(vecs, range(lo, primary_end), (core_end, hi), threshold, True, counts)
        return
    a_core, a_primary = _side_ranges(role, lo, mid)
    b_core, b_primary = _side_ranges(role, mid, hi)
    yield from _gemm_hits(vecs, range(lo, a_core), (b_core, hi), threshold, False, counts)
    yield from _gemm_hits(vecs, range(a_core, a_primary), (mid, hi), threshold, False, counts)
    yield from _gemm_hits(vecs, range(a_primary, mid), (mid, b_primary), threshold, False, counts)


def cells_forest(
    ids: np.ndarray,
    vecs: np.ndarray,
    role: np.ndarray,
    starts: np.ndarray,
    splits: np.ndarray,
    threshold: float,
    counts: BlockCounts,
) -> tuple[np.ndarray, np.ndarray]:
    """A spanning forest ``(root id, member id)`` of the pairs at or above ``threshold`` in many blocks.

    Block ``b`` holds rows ``starts[b]`` up to the next start; ``splits[b] < 0``: one side, else the second side
    starts there. Each side is sorted by role then id (a float32 score depends on the rows' places in the GEMM:
    a fixed order makes a pair within an ulp of the threshold come out the same in every run). ``vecs`` are unit
    rows; an id may occur in several blocks (one node). The components equal those of every scored pair.
    """
    ends = np.append(starts[1:], len(ids)).astype(np.int64)
    counts.copies += len(ids)
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for b in range(len(starts)):
        for u, v in _block_hits(vecs, role, int(starts[b]), int(splits[b]), int(ends[b]), threshold, counts):
            us.append(u)
            vs.append(v)
    if not us:
        return ids[:0], ids[:0]
    return spanning_forest(ids, np.concatenate(us), np.concatenate(vs))
