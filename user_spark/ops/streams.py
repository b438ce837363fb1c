"""Blocks of rows streamed through in batches (pure numpy, no Spark).

A Spark partition sorted by block keys reaches an Arrow UDF as a stream of record batches, and a block may
straddle two of them. :func:`whole_blocks` regroups the stream so every block arrives whole, holding back only
the rows of a batch's last block; :func:`block_bounds` finds where each block (and, in a two-sided block, its
second side) starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["block_bounds", "whole_blocks"]


def whole_blocks(
    batches: Iterable[Mapping[str, np.ndarray]], keys: Sequence[str]
) -> Iterator[dict[str, np.ndarray]]:
    """Regroup column batches, sorted by ``keys``, so that no run of equal keys is split between two outputs.

    Each batch maps column names to equally long arrays. Memory: one batch plus the held-back last block.

    >>> out = whole_blocks([{"k": np.array([1, 1, 2])}, {"k": np.array([2, 3])}], ["k"])
    >>> [b["k"].tolist() for b in out]
    [[1, 1], [2, 2], [3]]
    """
    pending: dict[str, np.ndarray] | None = None
    for batch in batches:
        if len(batch[keys[0]]) == 0:
            continue
        cols = dict(batch) if pending is None else {n: np.concatenate([pending[n], batch[n]]) for n in batch}
        in_last = np.ones(len(cols[keys[0]]), dtype=bool)
        for key in keys:
            in_last &= cols[key] == cols[key][-1]
        before = np.flatnonzero(~in_last)
        last = int(before[-1]) + 1 if len(before) else 0
        if last:
            yield {name: col[:last] for name, col in cols.items()}
        pending = {name: col[last:].copy() for name, col in cols.items()}  # a copy frees the batch
    if pending is not None:
        yield pending


def block_bounds(
    bucket: np.ndarray, left: np.ndarray, right: np.ndarray, side: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, splits)`` of the blocks of rows sorted by ``(bucket, left, right, side)``.

    A block is a run of equal ``(bucket, left, right)``. When ``left != right`` it pairs two sub-blocks: its
    rows of ``side == left`` come first, and ``splits`` holds where the rows of ``side == right`` begin;
    ``-1`` for one-sided blocks (``left == right``), whose pairs are those within the block.

    >>> block_bounds(np.array([5, 5, 5, 7]), np.array([0, 0, 0, 0]), np.array([1, 1, 1, 0]), np.array([0, 1, 1, 0]))
    (array([0, 3]), array([ 1, -1]))
    """
    n = len(bucket)
    change = (np.diff(bucket) != 0) | (np.diff(left) != 0) | (np.diff(right) != 0)
    starts = np.r_[0, np.flatnonzero(change) + 1] if n else np.zeros(0, dtype=np.int64)
    ends = np.append(starts[1:], n)
    splits = np.full(len(starts), -1, dtype=np.int64)
    for b in np.flatnonzero(left[starts] != right[starts]):
        splits[b] = starts[b] + np.searchsorted(side[starts[b] : ends[b]], right[starts[b]])
    return starts, splits
