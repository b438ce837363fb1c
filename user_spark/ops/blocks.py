"""Similarity on blocks of vectors (pure numpy, no Spark): unit rows, top-k per row (pairs above a threshold and
their forests: :mod:`user_spark.ops.forest`).

Every function here is deterministic: blocks arrive sorted by id, ties in score go to the smaller id, and a
block's GEMM is cut into row chunks so a task's memory is bounded by ``chunk_rows x block rows`` scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["block_topk", "sort_by_id", "unit_rows"]

CHUNK_ROWS = 1024


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
