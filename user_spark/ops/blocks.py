"""Blocks of vectors (pure numpy, no Spark): unit rows and id order, shared by top-k per row
(:mod:`user_spark.ops.topk`) and pairs above a threshold with their forests (:mod:`user_spark.ops.forest`).

Every function here is deterministic: blocks arrive sorted by id, ties in score go to the smaller id, and a
block's GEMM is cut into row chunks so a task's memory is bounded by ``chunk_rows x block rows`` scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["sort_by_id", "unit_rows"]

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


