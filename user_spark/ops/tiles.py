"""How a top-k join is cut into tasks (pure arithmetic, no Spark): tiles of the two sides, and partition keys
that put tile ``t`` in shuffle partition ``t``.

An exact join cuts the right side into ``R`` shards (each small enough for one task to hold) and the left side
into ``L`` tiles; task ``(r, l)`` streams left tile ``l`` past right shard ``r``. Every left row travels ``R``
times and every right row ``L`` times, so the plan picks the ``(R, L)`` with ``R x L`` about the cluster's
parallelism that moves the fewest rows. With one shard (the right side fits a task) no candidates need
merging across tasks.

Spark's ``repartition(n, col)`` sends a row to ``pmod(murmur3(col, seed 42), n)``; hashing tile numbers
directly would put two tiles in one partition about a third of the time and leave other cores idle, so each
tile gets an integer key whose hash lands in its own partition (:func:`partition_keys`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TilePlan", "partition_keys", "plan_tiles", "spark_hash_int", "task_count"]

#: Below this many multiply-adds a task is mostly Spark's fixed cost, so small joins use fewer tasks.
MIN_TASK_FLOPS = 4e9


@dataclass(frozen=True)
class TilePlan:
    """``right_shards`` x ``left_tiles`` tasks; ``copies`` = rows moved through the shuffle."""

    right_shards: int
    left_tiles: int
    copies: int

    @property
    def tiles(self) -> int:
        return self.right_shards * self.left_tiles


def task_count(n_left: int, n_right: int, dim: int, parallelism: int) -> int:
    """Tasks worth running for ``n_left x n_right`` dot products of ``dim`` floats: ``parallelism``, fewer when
    each would do less than :data:`MIN_TASK_FLOPS`.

    >>> task_count(10_000, 10_000, 384, 8), task_count(100, 100, 384, 8)
    (8, 1)
    """
    flops = 2.0 * max(n_left, 1) * max(n_right, 1) * dim
    return int(max(1, min(parallelism, math.ceil(flops / MIN_TASK_FLOPS))))


def plan_tiles(n_left: int, n_right: int, dim: int, parallelism: int, shard_bytes: int) -> TilePlan:
    """The cheapest ``(right shards, left tiles)`` for a join of ``n_left x n_right`` vectors of ``dim`` floats.

    Shards hold at most ``shard_bytes`` of float32 vectors; tasks number about ``parallelism`` (fewer for a
    join too small to keep them busy, more when the right side needs more shards).

    >>> plan_tiles(100_000, 100_000, 384, 2, 512 << 20)
    TilePlan(right_shards=1, left_tiles=2, copies=300000)
    """
    n_left, n_right = max(n_left, 1), max(n_right, 1)
    tasks = task_count(n_left, n_right, dim, parallelism)
    fewest = max(1, math.ceil(n_right * dim * 4 / shard_bytes))
    best: TilePlan | None = None
    for shards in range(min(fewest, n_right), max(fewest, tasks) + 1):
        tiles = max(1, min(n_left, math.ceil(tasks / shards)))
        plan = TilePlan(shards, tiles, n_left * shards + n_right * tiles)
        if best is None or plan.copies < best.copies:
            best = plan
    assert best is not None
    return best


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    out: np.ndarray = (x << np.uint32(r)) | (x >> np.uint32(32 - r))
    return out


def spark_hash_int(values: np.ndarray, seed: int = 42) -> np.ndarray:
    """Spark's ``hash()`` (Murmur3_x86_32, seed 42) of 32-bit integers, as ``int32``."""
    with np.errstate(over="ignore"):
        k1 = np.asarray(values).astype(np.int64).astype(np.uint32) * np.uint32(0xCC9E2D51)
        k1 = _rotl(k1, 15) * np.uint32(0x1B873593)
        h1 = np.uint32(seed) ^ k1
        h1 = _rotl(h1, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        h1 ^= np.uint32(4)  # the input's length in bytes
        h1 ^= h1 >> np.uint32(16)
        h1 *= np.uint32(0x85EBCA6B)
        h1 ^= h1 >> np.uint32(13)
        h1 *= np.uint32(0xC2B2AE35)
        h1 ^= h1 >> np.uint32(16)
    out: np.ndarray = h1.view(np.int32)
    return out


def partition_keys(n: int) -> list[int]:
    """``n`` small non-negative integers, the ``t``-th of which an ``int`` column hash-partitions into partition
    ``t`` of ``n`` (Spark's ``HashPartitioning``: ``pmod(hash(key), n)``).

    >>> partition_keys(2)
    [2, 0]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    found = np.full(n, -1, dtype=np.int64)
    start, step = 0, max(64, 4 * n)
    while (found < 0).any():
        candidates = np.arange(start, start + step, dtype=np.int64)
        parts = spark_hash_int(candidates).astype(np.int64) % n
        firsts = np.unique(parts, return_index=True)
        for part, index in zip(*firsts, strict=True):
            if found[part] < 0:
                found[part] = candidates[index]
        start += step
    return [int(v) for v in found]
