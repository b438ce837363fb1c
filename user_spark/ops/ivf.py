"""Inverted-file index math (pure numpy, no Spark): spherical k-means on a bounded sample, probe lists.

The Spark side (:mod:`user_spark.pipelines.join`) trains the coarse centroids here on a sample of the right
side collected to the driver (at most ``max_train_rows`` rows), assigns every right row to its nearest list and
sends every left row to its ``nprobe`` nearest lists.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["default_nlist", "default_nprobe", "nearest_lists", "spherical_kmeans"]


def default_nlist(n_right: int) -> int:
    """Coarse lists for ``n_right`` right rows: about ``sqrt(n)``, at least 1, at most 4096."""
    return int(min(4096, max(1, round(math.sqrt(max(n_right, 1))))))


def default_nprobe(nlist: int) -> int:
    """Lists each left row probes by default: a quarter of the lists, at least 16 (all lists when fewer)."""
    return int(min(nlist, max(16, math.ceil(nlist / 4))))


def spherical_kmeans(vectors: np.ndarray, k: int, *, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """``(k, dim)`` unit centroids of unit ``vectors`` (k-means++ seeding under cosine, then Lloyd steps).

    Deterministic for the same rows in the same order and seed. An emptied list is re-seeded with the row
    farthest from its centroid.
    """
    n = len(vectors)
    if n == 0:
        raise ValueError("spherical_kmeans needs at least one vector")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centroids = np.empty((k, vectors.shape[1]), dtype=np.float32)
    centroids[0] = vectors[rng.integers(n)]
    closest = 1.0 - vectors @ centroids[0]
    for i in range(1, k):
        weights = np.clip(closest, 0.0, None) ** 2
        total = weights.sum()
        pick = int(rng.choice(n, p=weights / total)) if total > 0 else int(rng.integers(n))
        centroids[i] = vectors[pick]
        closest = np.minimum(closest, 1.0 - vectors @ centroids[i])
    for _ in range(iterations):
        sims = vectors @ centroids.T
        labels = sims.argmax(axis=1)
        new = np.zeros_like(centroids)
        np.add.at(new, labels, vectors)
        counts = np.bincount(labels, minlength=k)
        best = sims[np.arange(n), labels]
        for empty in np.flatnonzero(counts == 0):
            far = int(best.argmin())
            new[empty] = vectors[far]
            best[far] = np.inf
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        new = (new / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        if np.allclose(new, centroids, atol=1e-6):
            centroids = new.astype(np.float32)
            break
        centroids = new.astype(np.float32)
    return centroids


def nearest_lists(vectors: np.ndarray, centroids: np.ndarray, nprobe: int) -> np.ndarray:
    """``(n, nprobe)`` indices of the most similar centroids per row, best first, ties to the lower index."""
    nprobe = min(nprobe, len(centroids))
    sims = vectors @ centroids.T
    order = np.lexsort((np.broadcast_to(np.arange(len(centroids)), sims.shape), -sims), axis=1)
    return order[:, :nprobe]
