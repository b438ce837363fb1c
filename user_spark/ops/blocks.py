"""Similarity on blocks of vectors (pure numpy, no Spark): unit rows, pairs above a threshold (top-k per row:
:mod:`user_spark.ops.topk`).

Every function here is deterministic: blocks arrive sorted by id, ties in score go to the smaller id, and a
block's GEMM is cut into row chunks so a task's memory is bounded by ``chunk_rows x block rows`` scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["blocks_forest", "sort_by_id", "threshold_pairs", "unit_rows"]

CHUNK_ROWS = 1024
SMALL_BLOCK = 64  # blocks up to this many rows are scored together, by size, in one batched matmul
_BATCH_FLOATS = 1 << 22  # floats per batched matmul (its stacked rows and its scores): 16 MiB each at most


def unit_rows(values: Sequence[Sequence[float]] | np.ndarray, dim: int | None = None) -> np.ndarray:
    """Stack vectors into a float32 matrix with L2-normalised rows (an all-zero row stays zero).

    Raises:
        ValueError: vectors of different lengths, or not ``dim`` long.
    """
    if isinstance(values, np.ndarray) and values.ndim == 2:
        matrix = values.astype(np.float32, copy=True)
    else:
        rows = list(values)
        if not rows:
            return np.zeros((0, dim or 0), dtype=np.float32)
        lengths = {len(v) for v in rows}
        if len(lengths) != 1:
            raise ValueError(f"embedding vectors have different lengths {sorted(lengths)}; all must be equally long")
        matrix = np.asarray(np.stack([np.asarray(v, dtype=np.float32) for v in rows]), dtype=np.float32)
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(f"embedding vectors have length {matrix.shape[1]}, expected {dim}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix


def sort_by_id(ids: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``ids`` sorted ascending and the other arrays' rows in the same order (rows arrive in any order)."""
    order = np.argsort(ids, kind="stable")
    return (ids[order], *(a[order] for a in arrays))


def _hits(
    a: np.ndarray, b: np.ndarray | None, threshold: float, chunk_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(rows of a, rows of the other side, scores)`` of the pairs at or above ``threshold``, ``chunk_rows`` rows
    of ``a`` at a time; ``b is None``: pairs within ``a``, upper triangle only (column > row)."""
    other = a if b is None else b
    for start in range(0, len(a), chunk_rows):
        stop = min(start + chunk_rows, len(a))
        scores = a[start:stop] @ other.T
        hit = scores >= threshold
        if b is None:
            hit &= np.arange(len(a))[None, :] > np.arange(start, stop)[:, None]
        rows, cols = np.nonzero(hit)
        yield start + rows, cols, scores[rows, cols]


def threshold_pairs(
    ids_a: np.ndarray,
    a: np.ndarray,
    ids_b: np.ndarray | None,
    b: np.ndarray | None,
    threshold: float,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with dot product ``>= threshold``, as ``(smaller id, larger id, score)``.

    ``b is None``: pairs within ``a`` (each unordered pair once). Otherwise: pairs between ``a`` and ``b``,
    which hold different rows. Ids must be sorted ascending within each side.
    """
    src, dst, sc = [], [], []
    other_ids = ids_a if b is None else ids_b
    assert other_ids is not None
    for rows, cols, scores in _hits(a, b, threshold, chunk_rows):
        x, y = ids_a[rows], other_ids[cols]
        swap = np.asarray(y < x) if len(x) else np.zeros(0, dtype=bool)
        src.append(np.where(swap, y, x))
        dst.append(np.where(swap, x, y))
        sc.append(scores.astype(np.float32))
    if not src:
        return ids_a[:0], ids_a[:0], np.zeros(0, dtype=np.float32)
    return np.concatenate(src), np.concatenate(dst), np.concatenate(sc)


def _roots(parent: np.ndarray) -> np.ndarray:
    """Compress ``parent`` (``parent[i] <= i``) in place until every entry points at its root; return it."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent[:] = grand


def _union(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Merge the sets of every ``(u[i], v[i])``; a set's root is its smallest member."""
    while len(u):
        roots = _roots(parent)
        ru, rv = roots[u], roots[v]
        apart = ru != rv
        if not apart.any():
            return
        u, v, ru, rv = u[apart], v[apart], ru[apart], rv[apart]
        np.minimum.at(parent, np.maximum(ru, rv), np.minimum(ru, rv))


def _forest(ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(root id, member id)`` for every non-root id linked by the edges ``ids[u] - ids[v]`` (ids may repeat:
    a row met in several blocks is one node); each root is the smallest id of its connected group."""
    if not len(u):
        return ids[:0], ids[:0]
    # Union-find over the distinct ids in sorted order, so each set's root (smallest position) is its smallest id.
    nodes, inverse = np.unique(ids[np.concatenate([u, v])], return_inverse=True)
    parent = np.arange(len(nodes))
    _union(parent, inverse[: len(u)], inverse[len(u) :])
    roots = _roots(parent)
    members = np.flatnonzero(roots != np.arange(len(nodes)))
    return nodes[roots[members]], nodes[members]


def _small_block_hits(
    starts: np.ndarray, sizes: np.ndarray, vecs: np.ndarray, threshold: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row pairs at or above ``threshold`` inside each block ``starts[i] .. starts[i] + sizes[i]``: blocks of one
    size are stacked into a ``(blocks, size, dim)`` array and scored by one batched matmul, not one call each."""
    for size in np.unique(sizes):
        if size < 2:
            continue
        first = starts[sizes == size]
        iu, ju = np.triu_indices(int(size), 1)
        step = max(1, _BATCH_FLOATS // int(size * max(size, vecs.shape[1])))
        for s in range(0, len(first), step):
            rows = first[s : s + step, None] + np.arange(size)
            stack = vecs[rows]
            scores = np.matmul(stack, stack.transpose(0, 2, 1))[:, iu, ju]
            block, pair = np.nonzero(scores >= threshold)
            yield rows[block, iu[pair]], rows[block, ju[pair]]


def blocks_forest(
    ids: np.ndarray,
    vecs: np.ndarray,
    starts: np.ndarray,
    splits: np.ndarray,
    threshold: float,
    *,
    small: int = SMALL_BLOCK,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """A spanning forest of the pairs at or above ``threshold`` in many blocks at once: ``(root id, member id)``.

    Block ``b`` holds rows ``starts[b]`` up to the next start (or the end). ``splits[b] < 0``: its pairs are
    those within the block; otherwise the block has two sides, rows before ``splits[b]`` and from it on, and
    its pairs are those between the sides. ``vecs`` are unit rows; an id may occur in several blocks (one node).
    Sort each side by id: a float32 score depends on the rows' places in the GEMM, so only a fixed order makes
    a pair within an ulp of the threshold come out the same in every run.
    The components equal those of every pair (:func:`threshold_pairs` per block) and the output has fewer
    edges than distinct ids. Small one-sided blocks (the common case: LSH buckets of a few rows) share batched
    matmuls, so the cost per block is a few microseconds; the others get a chunked GEMM each.
    """
    n = len(ids)
    ends = np.append(starts[1:], n).astype(np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    sizes = ends - starts
    batched = (splits < 0) & (sizes <= small)
    us: list[np.ndarray] = []
    vs: list[np.ndarray] = []
    for u, v in _small_block_hits(starts[batched], sizes[batched], vecs, threshold):
        us.append(u)
        vs.append(v)
    for b in np.flatnonzero(~batched & (sizes > 1)):
        lo, hi, mid = int(starts[b]), int(ends[b]), int(splits[b])
        if mid < 0:
            hits = ((lo + r, lo + c) for r, c, _ in _hits(vecs[lo:hi], None, threshold, chunk_rows))
        else:
            hits = ((lo + r, mid + c) for r, c, _ in _hits(vecs[lo:mid], vecs[mid:hi], threshold, chunk_rows))
        for u, v in hits:
            us.append(u)
            vs.append(v)
    if not us:
        return ids[:0], ids[:0]
    return _forest(ids, np.concatenate(us), np.concatenate(vs))
