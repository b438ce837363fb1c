"""A picture of a clustering: a 2-D PCA projection of a sample coloured by cluster, next to cluster sizes.

Needs matplotlib (``pip install "user-spark[plot]"``); imported only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pca_2d", "plot_clusters"]


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """``(n, 2)``: the rows projected on their two main principal axes (signs fixed for reproducibility)."""
    centered = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    axes = vt[:2]
    axes *= np.where(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    out = centered @ axes.T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def plot_clusters(
    vectors: np.ndarray, labels: np.ndarray, sizes: Sequence[tuple[int, int]], path: str, *, title: str = ""
) -> str:
    """Write a PNG: left, the sample's PCA projection coloured by cluster; right, every cluster's size.

    Args:
        vectors: ``(n, dim)`` sample of embeddings; labels: their cluster ids.
        sizes: ``(cluster_id, size)`` of every cluster (not just the sample's).
        path: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = pca_2d(np.asarray(vectors, dtype=np.float64))
    k = max([c for c, _ in sizes] + [int(labels.max()) if len(labels) else 0]) + 1
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    colors = [cmap(i % cmap.N) for i in range(k)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    ax1.scatter(points[:, 0], points[:, 1], c=[colors[int(c)] for c in labels], s=8, alpha=0.75, linewidths=0)
    ax1.set_title(f"PCA of a sample ({len(labels)} rows), colour = cluster")
    ax1.set_xlabel("PC 1")
    ax1.set_ylabel("PC 2")
    ordered = sorted(sizes)
    ax2.bar([str(c) for c, _ in ordered], [s for _, s in ordered], color=[colors[c] for c, _ in ordered])
    ax2.set_title(f"Cluster sizes (k = {len(ordered)})")
    ax2.set_xlabel("cluster id")
    ax2.set_ylabel("rows")
    if len(ordered) > 20:
        ax2.tick_params(axis="x", labelsize=6, rotation=90)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
