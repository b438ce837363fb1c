"""Similarity on blocks of vectors (pure numpy, no Spark): unit rows, top-k per row, pairs above a threshold.

Every function here is deterministic: blocks arrive sorted by id, ties in score go to the smaller id, and a
block's GEMM is cut into row chunks so a task's memory is bounded by ``chunk_rows x block rows`` scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["block_topk", "blocks_forest", "sort_by_id", "threshold_pairs", "unit_rows"]

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


def _self_mask(left_ids: np.ndarray, right_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(i, j)`` where ``left_ids[i] == right_ids[j]`` (ids unique within each side)."""
    _, li, rj = np.intersect1d(left_ids, right_ids, assume_unique=True, return_indices=True)
    return li, rj


def block_topk(
    left_ids: np.ndarray,
    left: np.ndarray,
    right_ids: np.ndarray,
    right: np.ndarray,
    k: int,
    *,
    min_score: float | None = None,
    exclude_same_id: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best right rows for each left row by dot product, best first, ties to the smaller right id.

    Both sides must be sorted by id (:func:`sort_by_id`) with unit rows. Returns flat arrays
    ``(left_ids, right_ids, scores)``; rows below ``min_score`` and, with ``exclude_same_id``, a row's match
    with the right row of the same id are left out, so a left row may get fewer than ``k``.

    >>> block_topk(np.array([0]), np.eye(2, dtype=np.float32)[:1], np.array([5, 6]), np.eye(2, dtype=np.float32), 1)
    (array([0]), array([5]), array([1.], dtype=float32))
    """
    out_l, out_r, out_s = [], [], []
    n_right = len(right_ids)
    if n_right == 0 or len(left_ids) == 0 or k < 1:
        empty = np.zeros(0, dtype=np.float32)
        return left_ids[:0], right_ids[:0], empty
    same = _self_mask(left_ids, right_ids) if exclude_same_id else None
    for start in range(0, len(left_ids), chunk_rows):
        stop = min(start + chunk_rows, len(left_ids))
        scores = left[start:stop] @ right.T
        if same is not None:
            inside = (same[0] >= start) & (same[0] < stop)
            scores[same[0][inside] - start, same[1][inside]] = -np.inf
        if min_score is not None:
            scores[scores < min_score] = -np.inf
        kk = min(k, n_right)
        if kk < n_right:
            kth = -np.partition(-scores, kk - 1, axis=1)[:, kk - 1 : kk]
            rows, cols = np.nonzero((scores >= kth) & np.isfinite(scores))
        else:
            rows, cols = np.nonzero(np.isfinite(scores))
        vals = scores[rows, cols]
        # right ids are sorted, so the column index breaks ties by id
        order = np.lexsort((cols, -vals, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        first = np.searchsorted(rows, rows, side="left")
        keep = (np.arange(len(rows)) - first) < kk
        out_l.append(left_ids[start + rows[keep]])
        out_r.append(right_ids[cols[keep]])
        out_s.append(vals[keep].astype(np.float32))
    return np.concatenate(out_l), np.concatenate(out_r), np.concatenate(out_s)


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
