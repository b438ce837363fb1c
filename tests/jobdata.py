"""Small vector data sets with known answers, for the job tests (no Spark, no files)."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted_duplicates(n: int = 240, dim: int = 24, seed: int = 0) -> np.ndarray:
    """Random unit vectors with chains a-b-c of near duplicates (cos ~0.95 between neighbours, less between
    the ends), so some groups are only connected through a middle row."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((n, dim)))
    for i in range(0, n // 3, 3):
        x[i + 1] = unit((x[i] + 0.3 * rng.standard_normal(dim) / np.sqrt(dim))[None])[0]
        x[i + 2] = unit((x[i + 1] + 0.3 * rng.standard_normal(dim) / np.sqrt(dim))[None])[0]
    return x.astype(np.float32)


def brute_components(x: np.ndarray, ids: list, threshold: float) -> dict:
    """id -> smallest id of its component in the graph of pairs with cosine >= threshold (union-find)."""
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sims = unit(x.astype(np.float64)) @ unit(x.astype(np.float64)).T
    for i, j in zip(*np.nonzero(np.triu(sims >= threshold, 1)), strict=False):
        parent[find(i)] = find(j)
    roots: dict = {}
    for i in range(len(ids)):
        roots.setdefault(find(i), []).append(ids[i])
    return {m: min(members) for members in roots.values() if len(members) > 1 for m in members}


def brute_topk(left: np.ndarray, lids: list, right: np.ndarray, rids: list, k: int, *, exclude_self: bool = False,
               min_score: float | None = None) -> dict:
    """left id -> [(right id, score)] best first, ties to the smaller right id."""
    sims = unit(left.astype(np.float64)) @ unit(right.astype(np.float64)).T
    out = {}
    for i, lid in enumerate(lids):
        cand = sorted((-sims[i, j], rids[j]) for j in range(len(rids))
                      if not (exclude_self and rids[j] == lid) and (min_score is None or sims[i, j] >= min_score))
        out[lid] = [(r, -s) for s, r in cand[:k]]
    return out
