"""Random-hyperplane LSH with banding, for cosine similarity (pure numpy, no Spark).

Two unit vectors at angle ``θ`` fall on the same side of a random hyperplane with probability ``1 - θ/π``.
A band of ``rows`` bits matches with ``p**rows``; a pair becomes a candidate when any of ``bands`` bands
matches: ``1 - (1 - p**rows)**bands``. :func:`choose_bands` picks the most selective band width whose band
count stays under a cap while a pair exactly at the threshold is still found with the target probability;
pairs above the threshold are found more often.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["band_keys", "candidate_probability", "choose_bands", "collision_probability", "hyperplanes"]

MAX_ROWS_PER_BAND = 62  # bits packed into one non-negative int64


def collision_probability(cosine: float | np.ndarray) -> float | np.ndarray:
    """Probability that one random hyperplane does not separate two vectors with this cosine."""
    result: float | np.ndarray = 1.0 - np.arccos(np.clip(cosine, -1.0, 1.0)) / math.pi
    return result


def candidate_probability(cosine: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that a pair with this cosine shares at least one of ``bands`` bands of ``rows`` bits."""
    return 1.0 - (1.0 - collision_probability(cosine) ** rows) ** bands


def _bands_needed(p: float, rows: int, target_recall: float) -> int:
    hit = p**rows
    if hit >= 1.0:
        return 1
    return max(1, math.ceil(math.log(1.0 - target_recall) / math.log1p(-hit)))


#: Rows at and above which :func:`choose_bands` allows 192 bands rather than 128 (docs/BENCHMARKS.md).
WIDE_BANDS_FROM_ROWS = 200_000


def choose_bands(
    threshold: float, *, target_recall: float = 0.995, max_bands: int | None = None, rows: int | None = None
) -> tuple[int, int]:
    """``(bands, rows_per_band)`` for a cosine threshold.

    The widest band (fewest false candidates, smallest buckets) such that at most ``max_bands`` bands find a
    pair at exactly ``threshold`` with probability ``>= target_recall``.

    The cap trades signature rows (``bands`` per row: an id and a bucket key) against vector copies (one per
    row per band whose bucket it shares). Embeddings cluster by topic, so narrow bands put most rows of a topic
    in shared buckets, and the more rows, the fuller the buckets (pairs sharing a bucket grow with the square
    of the rows). Without ``max_bands`` the cap follows ``rows``, the rows to deduplicate: 128 bands
    (122 x 23 at 0.92) below :data:`WIDE_BANDS_FROM_ROWS` and when unknown, 192 (185 x 26) from there. On
    clustered 384-d rows at 0.92, 122 x 23 copies each vector 4, 10 and 26 times at 100k, 300k and 1M rows,
    185 x 26 copies it 1, 3 and 10 times for 1.5 times the signature rows; dedup took 17 s against 20 s at
    100k, 57 s against 52 s at 300k and 392 s against 252 s at 1M (docs/BENCHMARKS.md).

    >>> choose_bands(0.92)
    (122, 23)
    >>> choose_bands(0.92, rows=1_000_000)
    (185, 26)
    """
    if max_bands is None:
        max_bands = 192 if rows is not None and rows >= WIDE_BANDS_FROM_ROWS else 128
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0.0 < target_recall < 1.0:
        raise ValueError(f"target_recall must be in (0, 1), got {target_recall}")
    p = float(collision_probability(threshold))
    best = (_bands_needed(p, 1, target_recall), 1)
    for rows in range(1, MAX_ROWS_PER_BAND + 1):
        bands = _bands_needed(p, rows, target_recall)
        if bands > max_bands:
            break
        best = (bands, rows)
    return best


def hyperplanes(dim: int, count: int, seed: int) -> np.ndarray:
    """``(dim, count)`` float32 Gaussian normals, the same for the same arguments on every machine."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((dim, count)).astype(np.float32)


def band_keys(vectors: np.ndarray, planes: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, bands)`` int64 bucket keys: band ``b`` packs the sign bits of hyperplanes ``b*rows .. b*rows+rows-1``."""
    if planes.shape[1] < bands * rows:
        raise ValueError(f"need {bands * rows} hyperplanes, got {planes.shape[1]}")
    if not 1 <= rows <= MAX_ROWS_PER_BAND:
        raise ValueError(f"rows per band must be in [1, {MAX_ROWS_PER_BAND}], got {rows}")
    bits = (vectors @ planes[:, : bands * rows]) >= 0.0
    weights = np.left_shift(np.int64(1), np.arange(rows, dtype=np.int64))
    keys: np.ndarray = bits.reshape(len(vectors), bands, rows).astype(np.int64) @ weights
    return keys
