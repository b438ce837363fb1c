"""The dedup job: read a table, drop exact and near-duplicate rows, write what is kept and the groups.

    user-spark dedup --input docs.parquet --output out --id-col id --text-col text --threshold 0.92

Writes ``OUTPUT/kept`` (the rows kept, every column), ``OUTPUT/groups`` (id, group_id, representative_id,
similarity) as Parquet and prints the summary (also written to ``OUTPUT/summary.json`` for a local output).
"""

from __future__ import annotations

import argparse
import json
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
    write_json,
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
from user_spark.pipelines.dedup import DEFAULT_THRESHOLD, DedupResult, Representative, dedup
from user_spark.pipelines.vectors import require_vectors

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DedupJobConfig", "build_parser", "main", "run"]


@dataclass(frozen=True)
class DedupJobConfig:
    input: str
    id_col: str
    text_col: str | None = None
    embedding_col: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    representative: Representative = "smallest_id"
    exact: bool = True
    input_format: str = "auto"
    seed: int = 17
    block_rows: int = 4096
    embed: EmbedOptions = field(default_factory=EmbedOptions)

    def __post_init__(self) -> None:
        require_vectors(self.text_col, self.embedding_col, "user-spark dedup", text_arg="--text-col",
                        embedding_arg="--embedding-col")


def run(spark: SparkSession, config: DedupJobConfig, metrics: EmbedMetrics | None = None) -> DedupResult:
    """Read the input and deduplicate it (``kept`` and ``groups`` are not written yet)."""
    df = read_input(spark, config.input, config.input_format)
    return dedup(
        df, id_col=config.id_col, text_col=config.text_col, embedding_col=config.embedding_col,
        threshold=config.threshold, representative=config.representative, exact=config.exact,
        seed=config.seed, block_rows=config.block_rows, embed_options=config.embed, metrics=metrics,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-spark dedup", description="Drop exact and near-duplicate rows (by embedding cosine)."
    )
    add_io_arguments(parser)
    parser.add_argument("--id-col", required=True, help="unique id column")
    add_vector_arguments(parser)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="cosine at or above which rows are near duplicates (default: %(default)s)")
    parser.add_argument("--representative", choices=("smallest_id", "longest_text"), default="smallest_id",
                        help="which row of a group is kept (default: %(default)s)")
    parser.add_argument("--no-exact", action="store_true", help="skip the exact (normalised text) step")
    parser.add_argument("--seed", type=int, default=17, help="LSH seed (default: %(default)s)")
    parser.add_argument("--block-rows", type=positive_int, default=4096, help="rows of a bucket compared together")
    add_embedding_arguments(parser)
    add_spark_arguments(parser)
    return parser


def _main(args: argparse.Namespace) -> int:
    config = DedupJobConfig(
        input=args.input, id_col=args.id_col, text_col=args.text_col, embedding_col=args.embedding_col,
        threshold=args.threshold, representative=args.representative, exact=not args.no_exact,
        input_format=args.input_format, seed=args.seed, block_rows=args.block_rows, embed=embed_options(args),
    )
    preflight(args, [args.input], [os.path.join(args.output, "groups"), os.path.join(args.output, "kept")])
    if config.embedding_col is None:
        check_model_early(config.embed, ["query"])
    with job_session("user-spark dedup", args) as spark:
        start = time.perf_counter()
        metrics = EmbedMetrics.create(spark)
        res = run(spark, config, metrics)
        write_parquet(res.groups, os.path.join(args.output, "groups"), args.mode)
        write_parquet(res.kept, os.path.join(args.output, "kept"), args.mode)
        seconds = time.perf_counter() - start
        summary = dict(res.summary, bands=res.bands, rows_per_band=res.rows_per_band, seconds=round(seconds, 1))
        local = local_path(args.output)
        if local is not None:
            write_json(os.path.join(local, "summary.json"), summary)
        print(f"user-spark dedup: {json.dumps(summary)}{embedded_counts(metrics, seconds)} -> {args.output}")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``user-spark dedup`` and ``jobs/dedup.py``."""
    return run_main(_main, argv, build_parser())
