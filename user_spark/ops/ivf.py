"""Inverted-file index math (pure numpy, no Spark): default sizes, shards of lists, routing, and the scan.

The coarse centroids are a spherical k-means (:mod:`user_spark.ops.kmeans`) of a bounded sample of the right
side; :mod:`user_spark.pipelines.ivf` routes rows to lists and shards, and each task scans its lists here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

__all__ = [
    "ListIndex",
    "default_nlist",
    "default_nprobe",
    "default_train_rows",
    "route_probes",
    "scan_lists",
    "shard_lists",
]


#: Lists each left row probes by default, whatever the size: the lists grow with the rows instead.
DEFAULT_NPROBE = 16
#: Training rows per list (faiss warns below 39), and the cap on the sample the driver holds.
TRAIN_ROWS_PER_LIST = 64
MAX_TRAIN_ROWS = 262_144


def default_nlist(n_right: int) -> int:
    """Coarse lists for ``n_right`` right rows: ``4 sqrt(n)``, but at least 256 rows per list on average (so
    16 probes scan 4,096 rows or more), at most 65,536 lists. At 1M rows: 3,906 lists of 256 rows.

    On ``bench/bench_jobs.py``'s clustered vectors 16 probes of ``4 sqrt(n)`` lists found 0.9999 of the exact
    top 10 at 100k and 300k rows (faiss ``IndexIVFFlat`` with the same lists and probes); on noisier vectors
    (tests/spark/test_similarity_join.py's) small lists lose recall: 16 of 155 lists of ~10 rows found 0.90.
    """
    n = max(n_right, 1)
    return int(max(1, min(65536, round(4 * math.sqrt(n)), n // 256)))


def default_nprobe(nlist: int) -> int:
    """Lists each left row probes by default: :data:`DEFAULT_NPROBE` (all lists when fewer)."""
    return int(min(nlist, DEFAULT_NPROBE))


def default_train_rows(nlist: int) -> int:
    """Rows of the k-means sample: :data:`TRAIN_ROWS_PER_LIST` per list, at most :data:`MAX_TRAIN_ROWS`."""
    return int(min(MAX_TRAIN_ROWS, TRAIN_ROWS_PER_LIST * max(nlist, 1)))


def shard_lists(centroids: np.ndarray, weights: np.ndarray, shards: int, *, seed: int = 0,
                slack: float = 1.15) -> np.ndarray:
    """Shard of each list: neighbouring lists together, each shard about ``1 / shards`` of the rows.

    The centroids are clustered into ``shards`` groups (spherical k-means); lists then go, heaviest first, to
    the most similar group that stays under ``slack`` times an even share of ``weights`` (the lists' sizes),
    or to the lightest group. A left row's probes are neighbouring lists, so they mostly share a shard and the
    row travels to few shards.
    """
    n = len(centroids)
    if shards <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int32)
    from user_spark.ops.kmeans import train

    groups = train(centroids, shards, seed=seed, restarts=1).centroids.vectors
    affinity = centroids @ groups.T
    weights = np.asarray(weights, dtype=np.float64) + 1e-9
    cap = slack * weights.sum() / len(groups) + weights.max()
    load = np.zeros(len(groups))
    out = np.empty(n, dtype=np.int32)
    for lst in np.argsort(-weights, kind="stable"):
        for g in np.argsort(-affinity[lst], kind="stable"):
            if load[g] + weights[lst] <= cap:
                break
        else:
            g = int(load.argmin())
        out[lst] = g
        load[g] += weights[lst]
    return out


def route_probes(lists: np.ndarray, shard_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where left rows go: one copy per (row, shard holding one of its probed ``lists``).

    Returns ``(row, shard, offsets, probes)``: copy ``i`` is of row ``row[i]`` to shard ``shard[i]``, scanning
    lists ``probes[offsets[i]:offsets[i + 1]]`` there.

    >>> route_probes(np.array([[4, 1, 2]]), np.array([0, 1, 1, 0, 0]))
    (array([0, 0]), array([0, 1], dtype=int32), array([0, 1, 3]), array([4, 1, 2], dtype=int32))
    """
    n, p = lists.shape
    shards = shard_of[lists]
    order = np.argsort(shards, axis=1, kind="stable")
    flat_shards = np.take_along_axis(shards, order, axis=1).reshape(-1).astype(np.int32)
    flat_lists = np.take_along_axis(lists, order, axis=1).reshape(-1).astype(np.int32)
    rows = np.repeat(np.arange(n), p)
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (flat_shards[1:] != flat_shards[:-1]) | (rows[1:] != rows[:-1])
    starts = np.flatnonzero(new)
    return rows[starts], flat_shards[starts], np.append(starts, len(rows)), flat_lists


class ListIndex:
    """Rows grouped by IVF list: ``order`` lists the row positions list by list (ascending within a list), and
    list ``lists[i]`` holds ``order[starts[i]:ends[i]]``.

    >>> ListIndex(np.array([3, 1, 3, 1])).order
    array([1, 3, 0, 2])
    """

    def __init__(self, lists: np.ndarray) -> None:
        self.order = np.argsort(lists, kind="stable")
        self.lists, starts = np.unique(lists[self.order], return_index=True)
        self.starts = starts.astype(np.int64)
        self.ends = np.append(self.starts[1:], len(lists)).astype(np.int64)

    @property
    def identity(self) -> bool:
        """One list: the rows are already in list order."""
        return len(self.lists) <= 1


def _probe_groups(probes: np.ndarray, index: ListIndex) -> Iterator[tuple[int, np.ndarray]]:
    """``(index of a list in ``index``, the left rows probing it)`` for every list both sides have."""
    rows = np.repeat(np.arange(probes.shape[0]), probes.shape[1])
    flat = probes.reshape(-1)
    order = np.argsort(flat, kind="stable")
    flat, rows = flat[order], rows[order]
    values, starts = np.unique(flat, return_index=True)
    ends = np.append(starts[1:], len(flat))
    where = np.searchsorted(index.lists, values)
    for value, at, lo, hi in zip(values, where, starts, ends, strict=True):
        if at < len(index.lists) and index.lists[at] == value:
            yield int(at), rows[lo:hi]


def scan_lists(
    left: np.ndarray,
    probes: np.ndarray,
    right: np.ndarray,
    index: ListIndex,
    k: int,
    *,
    min_score: float | None = None,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    chunk_rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each left row's best ``k`` right rows among the lists it probes: ``(left row, right position, score)``.

    ``right`` holds unit rows in list order (``right[j]`` is row ``index.order[j]``); ``probes[i]`` the lists
    left row ``i`` scans (``-1``: none). Every list is one GEMM of the rows probing it against the list's
    rows, fed to one running top-k (:class:`~user_spark.ops.topk.RunningTopK`): ties go to the smaller right
    position. ``exclude = (left ids, right ids by position)`` leaves out a row's match with its own id.
    """
    from user_spark.ops.topk import RunningTopK

    top = RunningTopK(len(left), k, floor=min_score)
    for at, rows in _probe_groups(probes, index):
        lo, hi = int(index.starts[at]), int(index.ends[at])
        cols = index.order[lo:hi]
        block = right[lo:hi]
        for s in range(0, len(rows), chunk_rows):
            part = rows[s : s + chunk_rows]
            scores = left[part] @ block.T
            if exclude is not None:
                _, li, rj = np.intersect1d(exclude[0][part], exclude[1][cols], assume_unique=True,
                                           return_indices=True)
                scores[li, rj] = -np.inf
            top.update(scores, cols, part)
    return top.result()
