"""The cluster job: k-means (cosine) over embeddings; writes assignments, a per-cluster summary and a PNG.

    user-spark cluster --input docs.parquet --output out --id-col id --text-col text --k 5:30:5

Writes ``OUTPUT/assignments`` (id, cluster_id, similarity) and ``OUTPUT/summary`` (cluster_id, size,
mean_similarity, nearest) as Parquet and, for a local output, ``OUTPUT/clusters.png`` (``--plot`` elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from user_spark.cli.flags import (
    add_embedding_arguments,
    add_vector_arguments,
    check_model_early,
    embed_options,
    embedded_counts,
    positive_int,
)
from user_spark.cli.session import (
    add_io_arguments,
    add_spark_arguments,
    job_session,
    local_path,
    preflight,
    read_input,
    run_main,
    write_parquet,
)
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions
from user_spark.errors import OptionError
from user_spark.pipelines.cluster import ClusterResult, cluster
from user_spark.pipelines.vectors import ID, VEC, hash_sample, require_vectors

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["ClusterJobConfig", "build_parser", "main", "parse_k", "run", "write_plot"]

logger = logging.getLogger(__name__)


def parse_k(spec: str) -> int | range:
    """``"20"`` -> 20; ``"5:30"`` -> range(5, 31); ``"5:30:5"`` -> range(5, 31, 5) (inclusive end)."""
    try:
        parts = [int(p) for p in spec.split(":")]
    except ValueError:
        raise OptionError(f"--k expects N or START:END[:STEP], got {spec!r}") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) in (2, 3) and parts[0] <= parts[1]:
        return range(parts[0], parts[1] + 1, parts[2] if len(parts) == 3 else 1)
    raise OptionError(f"--k expects N or START:END[:STEP] with START <= END, got {spec!r}")


@dataclass(frozen=True)
class ClusterJobConfig:
    input: str
    id_col: str
    k: int | range = 20
    text_col: str | None = None
    embedding_col: str | None = None
    seed: int = 7
    top_n: int = 5
    sample_rows: int = 20000
    input_format: str = "auto"
    embed: EmbedOptions = field(default_factory=EmbedOptions)

    def __post_init__(self) -> None:
        require_vectors(self.text_col, self.embedding_col, "user-spark cluster", text_arg="--text-col",
                        embedding_arg="--embedding-col")


def run(spark: SparkSession, config: ClusterJobConfig, metrics: EmbedMetrics | None = None) -> ClusterResult:
    df = read_input(spark, config.input, config.input_format)
    return cluster(
        df, id_col=config.id_col, text_col=config.text_col, embedding_col=config.embedding_col, k=config.k,
        seed=config.seed, top_n=config.top_n, sample_rows=config.sample_rows, embed_options=config.embed,
        metrics=metrics,
    )


def write_plot(res: ClusterResult, path: str, *, sample_rows: int = 3000, seed: int = 7) -> str:
    """Draw ``res`` to a PNG from a sample of at most ``sample_rows`` rows (chosen by id hash)."""
    import numpy as np

    from user_spark.ops.blocks import unit_rows
    from user_spark.pipelines.plot import plot_clusters

    assert res.vectors is not None
    sizes = [(int(r["cluster_id"]), int(r["size"])) for r in res.summary.select("cluster_id", "size").collect()]
    total = sum(s for _, s in sizes)
    id_col = res.assignments.columns[0]
    sample = (
        hash_sample(res.vectors, ID, min(1.0, sample_rows / max(total, 1)), seed)
        .join(res.assignments.withColumnRenamed(id_col, ID), ID)
        .orderBy(ID).limit(sample_rows).collect()
    )
    vectors = unit_rows([r[VEC] for r in sample]) if sample else np.zeros((0, res.centroids.shape[1]))
    labels = np.array([r["cluster_id"] for r in sample], dtype=int)
    return plot_clusters(vectors, labels, sizes, path, title=f"k-means (cosine), k = {res.k}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-spark cluster", description="Cluster rows by their embeddings (k-means, cosine)."
    )
    add_io_arguments(parser)
    parser.add_argument("--id-col", required=True, help="unique id column")
    add_vector_arguments(parser)
    parser.add_argument(
        "--k", default="20", help="clusters: N, or START:END[:STEP] to choose by silhouette (default: 20)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top-n", type=int, default=5, help="texts nearest each centroid in the summary")
    parser.add_argument(
        "--sample-rows", type=positive_int, default=20000, help="sample size for choosing k by silhouette"
    )
    parser.add_argument("--plot", help="PNG to write (default: OUTPUT/clusters.png for a local output)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    add_embedding_arguments(parser)
    add_spark_arguments(parser)
    return parser


def _main(args: argparse.Namespace) -> int:
    config = ClusterJobConfig(
        input=args.input,
        id_col=args.id_col,
        k=parse_k(args.k),
        text_col=args.text_col,
        embedding_col=args.embedding_col,
        seed=args.seed,
        top_n=args.top_n,
        sample_rows=args.sample_rows,
        input_format=args.input_format,
        embed=embed_options(args),
    )
    preflight(args, [args.input], [os.path.join(args.output, "assignments"), os.path.join(args.output, "summary")])
    if config.embedding_col is None:
        check_model_early(config.embed, ["query"])
    plot = None if args.no_plot else args.plot
    if plot is None and not args.no_plot and (local := local_path(args.output)) is not None:
        plot = os.path.join(local, "clusters.png")
    with job_session("user-spark cluster", args) as spark:
        start = time.perf_counter()
        metrics = EmbedMetrics.create(spark)
        res = run(spark, config, metrics)
        write_parquet(res.assignments, os.path.join(args.output, "assignments"), args.mode)
        write_parquet(res.summary, os.path.join(args.output, "summary"), args.mode)
        if plot:
            write_plot(res, plot, seed=args.seed)
        chosen = f"k={res.k}" + (
            " (silhouette " + ", ".join(f"{k}: {s:.3f}" for k, s in res.silhouettes.items()) + ")"
            if res.silhouettes
            else ""
        )
        seconds = time.perf_counter() - start
        print(
            f"user-spark cluster: {chosen}{embedded_counts(metrics, seconds)}; {seconds:.1f} s -> {args.output}"
            + (f", plot {plot}" if plot else "")
        )
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``user-spark cluster`` and ``jobs/cluster.py``."""
    return run_main(_main, argv, build_parser())
