"""Top-k by dot product (pure numpy, no Spark): a running top-k per row fed block by block, and a blocked GEMM.

A block of scores rarely changes a row's top k once the row has seen a few thousand columns, so a
:class:`RunningTopK` keeps each row's current k-th best score as a threshold and only looks at the entries
of a new block that reach it (one comparison per score, then a merge of the few hits), instead of a
partial sort of every block. Measured at d = 384 (1,024 x 50,000 scores): ``np.argpartition`` alone costs
1.2x the GEMM that made the scores and ``np.partition`` 0.84x (one core). ``bench/bench_join.py topk``
(2,048 x 50,000, 2026-12-01, the GEMM on two BLAS threads, the selection on one): ``block_topk`` took 1.89x
its GEMM, so the selection is not yet small next to the GEMM (docs/BENCHMARKS.md).

Ties in score go to the smaller column position; the Spark side puts columns in id order, so ties go to the
smaller id, and the result is the same whatever the block boundaries.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_COLS", "CHUNK_ROWS", "RunningTopK", "block_topk"]

#: Left rows per GEMM chunk, and right rows per column block: 4M float32 scores (16 MiB) per GEMM.
CHUNK_ROWS = 1024
BLOCK_COLS = 4096


class RunningTopK:
    """The ``k`` best ``(score, column)`` of each of ``rows`` rows, over blocks of columns seen so far.

    Args:
        rows: rows tracked. k: entries kept per row.
        floor: entries below this score are never kept (``min_score``); ``-inf`` entries never are.

    >>> top = RunningTopK(1, 2)
    >>> top.update(np.array([[0.1, 0.9, 0.5]], dtype=np.float32), np.array([0, 1, 2]))
    >>> top.result()
    (array([0, 0]), array([1, 2]), array([0.9, 0.5], dtype=float32))
    """

    def __init__(self, rows: int, k: int, *, floor: float | None = None) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.floor = np.float32(-np.inf if floor is None else floor)
        self.scores = np.full((rows, k), -np.inf, dtype=np.float32)  # best first
        self.cols = np.full((rows, k), -1, dtype=np.int64)

    def update(self, block: np.ndarray, cols: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Offer ``block[i, j]`` as the score of row ``rows[i]`` (all rows when ``None``) and column ``cols[j]``.

        ``cols`` must be ascending within the block; ``-inf`` marks an entry to leave out.
        """
        if block.size == 0:
            return
        kth = self.scores[:, -1] if rows is None else self.scores[rows, -1]
        threshold = np.maximum(kth, self.floor)
        width = block.shape[1]
        open_rows = np.flatnonzero(kth == -np.inf)
        if len(open_rows) and width > self.k:
            # Rows that hold fewer than k entries would take every entry of the block: their k-th best within
            # the block bounds what can enter their top k (a partial sort of those rows only, usually once).
            part = np.partition(block[open_rows], width - self.k, axis=1)[:, width - self.k]
            threshold[open_rows] = np.maximum(threshold[open_rows], part)
        r, c = np.nonzero(block >= threshold[:, None])
        vals = block[r, c]
        keep = vals > -np.inf
        if not keep.all():
            r, c, vals = r[keep], c[keep], vals[keep]
        if len(r):
            self._merge(r if rows is None else rows[r], cols[c], vals)

    def _merge(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """Merge new ``(row, col, score)`` hits into the rows' current entries, keeping the best k."""
        touched = np.unique(rows)
        k = self.k
        old_rows = np.repeat(touched, k)
        all_rows = np.concatenate([old_rows, rows])
        all_cols = np.concatenate([self.cols[touched].reshape(-1), cols])
        all_vals = np.concatenate([self.scores[touched].reshape(-1), vals])
        order = np.lexsort((all_cols, -all_vals, all_rows))
        all_rows, all_cols, all_vals = all_rows[order], all_cols[order], all_vals[order]
        first = np.searchsorted(all_rows, all_rows, side="left")
        rank = np.arange(len(all_rows)) - first
        top = rank < k
        # every touched row brings its k old entries (some may be -inf), so it fills all k slots again
        self.scores[all_rows[top], rank[top]] = all_vals[top]
        self.cols[all_rows[top], rank[top]] = all_cols[top]

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat ``(row, column, score)`` of every kept entry, by row, best first (ties: smaller column)."""
        rows, slots = np.nonzero(self.scores > -np.inf)
        return rows, self.cols[rows, slots], self.scores[rows, slots]


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
    block_cols: int = BLOCK_COLS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best right rows for each left row by dot product, best first, ties to the smaller right id.

    The right side must be sorted by id with unit rows (the left side's order is kept). Returns flat arrays
    ``(left_ids, right_ids, scores)``; rows below ``min_score`` and, with ``exclude_same_id``, a row's match
    with the right row of the same id are left out, so a left row may get fewer than ``k``. Memory: one
    ``chunk_rows x block_cols`` float32 block of scores and the chunk's top k.

    >>> block_topk(np.array([0]), np.eye(2, dtype=np.float32)[:1], np.array([5, 6]), np.eye(2, dtype=np.float32), 1)
    (array([0]), array([5]), array([1.], dtype=float32))
    """
    n_left, n_right = len(left_ids), len(right_ids)
    if n_right == 0 or n_left == 0 or k < 1:
        return left_ids[:0], right_ids[:0], np.zeros(0, dtype=np.float32)
    same_l, same_r = _self_mask(left_ids, right_ids) if exclude_same_id else (np.zeros(0, int), np.zeros(0, int))
    buffer = np.empty((min(chunk_rows, n_left), min(block_cols, n_right)), dtype=np.float32)
    out_l, out_r, out_s = [], [], []
    for start in range(0, n_left, chunk_rows):
        stop = min(start + chunk_rows, n_left)
        top = RunningTopK(stop - start, min(k, n_right), floor=min_score)
        inside = (same_l >= start) & (same_l < stop)
        for c0 in range(0, n_right, block_cols):
            c1 = min(c0 + block_cols, n_right)
            scores = np.matmul(left[start:stop], right[c0:c1].T, out=buffer[: stop - start, : c1 - c0])
            if exclude_same_id:
                hit = inside & (same_r >= c0) & (same_r < c1)
                scores[same_l[hit] - start, same_r[hit] - c0] = -np.inf
            top.update(scores, np.arange(c0, c1))
        rows, cols, vals = top.result()
        out_l.append(left_ids[start + rows])
        out_r.append(right_ids[cols])
        out_s.append(vals)
    return np.concatenate(out_l), np.concatenate(out_r), np.concatenate(out_s)
