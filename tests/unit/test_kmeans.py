"""Spherical k-means and centroid assignment (ops/kmeans.py): quality, determinism, the margin guarantee."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from user_spark.ops.blocks import unit_rows
from user_spark.ops.kmeans import Centroids, cosine_silhouette, train


def blobs(n: int = 600, k: int = 6, dim: int = 32, noise: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim))
    labels = rng.integers(0, k, n)
    return unit_rows(centers[labels] + noise * rng.standard_normal((n, dim))), labels


def objective(x: np.ndarray, centroids: np.ndarray) -> float:
    return float((x.astype(np.float64) @ centroids.T.astype(np.float64)).max(axis=1).mean())


def test_finds_planted_clusters_and_reports_its_objective():
    x, planted = blobs()
    fit = train(x, 6, seed=1)
    labels, _ = fit.centroids.nearest(x)
    assert len({(p, q) for p, q in zip(planted, labels[:, 0], strict=True)}) == 6  # same partition, renamed
    assert fit.objective == pytest.approx(objective(x, fit.centroids.vectors), abs=1e-6)
    assert fit.sizes.sum() == len(x) and np.allclose(np.linalg.norm(fit.centroids.vectors, axis=1), 1.0, atol=1e-6)


def test_seeded_runs_are_identical_and_restarts_keep_the_best_objective():
    x = unit_rows(np.random.default_rng(3).standard_normal((400, 5)))  # no clusters: many local optima
    once = train(x, 12, seed=5, restarts=1)
    again = train(x, 12, seed=5, restarts=1)
    assert np.array_equal(once.centroids.vectors, again.centroids.vectors)
    several = train(x, 12, seed=5, restarts=4)
    singles = [train(x, 12, seed=5, restarts=r + 1).objective for r in range(4)]
    # restart r of a run is the r-th child seed, so a run with more restarts never ends worse
    assert singles == sorted(singles) and several.objective == singles[-1] and singles[-1] > singles[0]
    assert several.restart == singles.index(singles[-1])


def test_lloyd_improves_on_the_seeding():
    x, _ = blobs(n=500, k=20, noise=1.0, seed=4)
    seeded = train(x, 20, seed=2, restarts=1, max_iter=0)
    fitted = train(x, 20, seed=2, restarts=1)
    assert fitted.iterations >= 1 and fitted.objective > seeded.objective


def test_k_is_capped_at_the_distinct_rows():
    x = unit_rows(np.repeat(np.eye(3, dtype=np.float32), [4, 3, 3], axis=0))
    fit = train(x, 5, seed=0)
    assert fit.centroids.k == 3 and sorted(fit.sizes.tolist()) == [3, 3, 4] and fit.objective == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one row"):
        train(np.zeros((0, 3), dtype=np.float32), 2)


def test_nearest_is_ranked_ties_go_to_the_lower_label_and_rows_do_not_depend_on_their_batch():
    c = Centroids(unit_rows(np.array([[0, 1], [1, 0], [1, 0], [1, 1]], dtype=np.float32)))
    labels, sims = c.nearest(np.array([[1.0, 0.0]], dtype=np.float32), 3)
    assert labels.tolist() == [[1, 2, 3]] and sims[0, :2].tolist() == [1.0, 1.0]
    x, _ = blobs(n=300, k=5, seed=9)
    fit = train(x, 40, seed=0, restarts=1)
    whole = fit.centroids.nearest(x, 3)
    for start, stop in ((0, 1), (7, 8), (100, 173), (299, 300)):
        part = fit.centroids.nearest(x[start:stop], 3)
        assert np.array_equal(part[0], whole[0][start:stop]) and np.array_equal(part[1], whole[1][start:stop])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 12), cosine=st.sampled_from([0.8, 0.9, 0.95]))
def test_rows_closer_than_the_radius_always_share_a_centroid(seed, k, cosine):
    """The margin guarantee: with every centroid allowed, a pair at the threshold straddling two cells is put
    together: the nearest centroid of one row is among the other row's."""
    rng = np.random.default_rng(seed)
    centroids = Centroids(unit_rows(rng.standard_normal((k, 6))))
    a = unit_rows(rng.standard_normal((200, 6)))
    # each partner at exactly `cosine` from its row, in a random direction
    noise = rng.standard_normal((200, 6))
    noise -= (noise * a).sum(1, keepdims=True) * a
    b = unit_rows(cosine * a + np.sqrt(1 - cosine**2) * unit_rows(noise))
    radius = float(np.sqrt(2 - 2 * cosine)) + 1e-6
    cells = []
    for side in (a, b):
        rows, labels, _, ranks = centroids.within(side, radius, max_cells=k)
        cells.append([set(labels[rows == i].tolist()) for i in range(len(side))])
        assert (ranks[np.r_[True, rows[1:] != rows[:-1]]] == 0).all()  # each row's nearest comes first
    nearest_a, nearest_b = centroids.nearest(a)[0][:, 0], centroids.nearest(b)[0][:, 0]
    straddling = nearest_a != nearest_b
    assert all(nearest_b[i] in cells[0][i] or nearest_a[i] in cells[1][i] for i in range(200))
    if straddling.any():  # with no margin the straddling pairs would be lost
        rows, labels, _, _ = centroids.within(a, 0.0, max_cells=k)
        assert all(nearest_b[i] not in set(labels[rows == i].tolist()) for i in np.flatnonzero(straddling))


def test_within_keeps_cells_by_distance_to_their_boundary():
    c = Centroids(np.eye(2, dtype=np.float32))
    x = unit_rows(np.array([[0.8, 0.6], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32))
    rows, labels, sims, ranks = c.within(x, 0.2)
    # row 0 is (0.8 - 0.6) / sqrt(2) = 0.14 from the boundary; row 1 is 0.71 away; row 2 mirrors row 0
    assert rows.tolist() == [0, 0, 1, 2, 2] and labels.tolist() == [0, 1, 0, 1, 0]
    assert ranks.tolist() == [0, 1, 0, 0, 1] and np.allclose(sims, [0.8, 0.6, 1.0, 0.8, 0.6])
    assert c.within(x, 0.2, max_cells=1)[0].tolist() == [0, 1, 2]


def test_two_level_index_for_many_centroids():
    x, _ = blobs(n=3000, k=30, dim=16, noise=0.6, seed=6)
    flat = train(x, 64, seed=3, restarts=1)
    tree = train(x, 64, seed=3, restarts=1, two_level_from=50, probe=3)
    assert tree.centroids.coarse is not None and tree.centroids.k == 64 and tree.centroids.coarse.shape[0] == 8
    assert tree.objective >= 0.95 * flat.objective
    # probing every cell finds the exact nearest centroid; probing few finds it for most rows
    everything = Centroids(tree.centroids.vectors, tree.centroids.coarse, tree.centroids.cell_starts, probe=8)
    exact = Centroids(tree.centroids.vectors).nearest(x, 2)
    assert np.array_equal(everything.nearest(x, 2)[0], exact[0])
    assert (tree.centroids.nearest(x)[0][:, 0] == exact[0][:, 0]).mean() > 0.9
    rows, labels, _, ranks = tree.centroids.within(x[:50], 0.3, max_cells=3)
    assert set(rows.tolist()) == set(range(50)) and (labels < 64).all() and ranks.max() <= 2


def test_cosine_silhouette_equals_its_definition():
    x, planted = blobs(n=120, k=4, dim=8, noise=0.8, seed=2)
    labels = planted.copy()
    labels[:3] = 9  # a small extra cluster, and one singleton below
    labels[3] = 11
    dist = 1.0 - x.astype(np.float64) @ x.T.astype(np.float64)
    scores = []
    for i in range(len(x)):
        own = labels == labels[i]
        if own.sum() == 1:
            scores.append(0.0)
            continue
        a = dist[i, own].sum() / (own.sum() - 1)
        b = min(dist[i, labels == other].mean() for other in set(labels.tolist()) - {labels[i]})
        scores.append((b - a) / max(a, b))
    assert cosine_silhouette(x, labels) == pytest.approx(float(np.mean(scores)), abs=1e-6)
    with pytest.raises(ValueError, match="two clusters"):
        cosine_silhouette(x, np.zeros(len(x)))
