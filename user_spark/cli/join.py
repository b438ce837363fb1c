"""The similarity-join job: for each left row, the k most similar right rows (or the same table's rows).

    user-spark join --left queries.parquet --right passages.parquet --output pairs \
        --left-id-col qid --right-id-col pid --left-text-col question --right-text-col passage --k 10

Writes ``<left id>, <right id>, score, rank`` as Parquet. Without ``--right`` it joins ``--left`` with itself,
leaving out each row's match with itself.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from user_spark.cli.flags import (
    add_checkpoint_argument,
    add_embedding_arguments,
    add_vector_arguments,
    check_model_early,
    embed_options,
    embedded_counts,
    positive_int,
)
from user_spark.cli.session import (
    INPUT_FORMATS,
    add_spark_arguments,
    job_session,
    preflight,
    read_input,
    run_main,
    write_parquet,
)
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions
from user_spark.errors import OptionError
from user_spark.pipelines.join import Method, similarity_join
from user_spark.pipelines.staging import Staging, staging

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["JoinJobConfig", "build_parser", "main", "run"]


@dataclass(frozen=True)
class JoinJobConfig:
    left: str
    left_id_col: str
    right: str | None = None
    right_id_col: str | None = None
    left_text_col: str | None = None
    right_text_col: str | None = None
    left_embedding_col: str | None = None
    right_embedding_col: str | None = None
    k: int = 10
    min_score: float | None = None
    method: Method = "exact"
    nlist: int | None = None
    nprobe: int | None = None
    block_rows: int | None = None
    input_format: str = "auto"
    checkpoint_dir: str | None = None
    embed: EmbedOptions = field(default_factory=EmbedOptions)

    def __post_init__(self) -> None:
        if self.right is None and (self.right_text_col or self.right_embedding_col or self.right_id_col):
            raise OptionError("--right-* columns need --right (without --right, --left is joined with itself)")


def run(spark: SparkSession, config: JoinJobConfig, metrics: EmbedMetrics | None = None,
        staging: Staging | None = None) -> DataFrame:
    """The pairs, lazily; embedded text is staged under ``staging`` (or ``config.checkpoint_dir``)."""
    left = read_input(spark, config.left, config.input_format)
    right = read_input(spark, config.right, config.input_format) if config.right else None
    return similarity_join(
        left, right, left_id_col=config.left_id_col, right_id_col=config.right_id_col,
        left_text_col=config.left_text_col, right_text_col=config.right_text_col,
        left_embedding_col=config.left_embedding_col, right_embedding_col=config.right_embedding_col,
        k=config.k, min_score=config.min_score, method=config.method, nlist=config.nlist, nprobe=config.nprobe,
        block_rows=config.block_rows, embed_options=config.embed, metrics=metrics,
        checkpoint_dir=staging or config.checkpoint_dir,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-spark join", description="Top-k most similar rows of one table for each row of another (or itself)."
    )
    parser.add_argument("--left", required=True, help="left input (queries)")
    parser.add_argument("--right", help="right input (passages); default: join --left with itself")
    parser.add_argument("--output", required=True, help="output folder (Parquet)")
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default="auto")
    parser.add_argument("--mode", choices=("errorifexists", "overwrite"), default="errorifexists")
    parser.add_argument("--left-id-col", required=True)
    parser.add_argument("--right-id-col", help="default: --left-id-col")
    add_vector_arguments(parser, "left-", "left")
    add_vector_arguments(parser, "right-", "right")
    parser.add_argument("--k", type=positive_int, default=10, help="matches per left row (default: %(default)s)")
    parser.add_argument("--min-score", type=float, help="leave out matches below this cosine")
    parser.add_argument("--method", choices=("exact", "ivf"), default="exact")
    parser.add_argument("--nlist", type=positive_int,
                        help="IVF lists (default: 4 sqrt(right rows), at least 256 rows a list)")
    parser.add_argument("--nprobe", type=positive_int, help="IVF lists probed per left row (default: 16)")
    parser.add_argument("--block-rows", type=positive_int,
                        help="most right rows one task holds (default: 256 MiB of float32 vectors)")
    add_checkpoint_argument(parser)
    add_embedding_arguments(parser)
    add_spark_arguments(parser)
    return parser


def _main(args: argparse.Namespace) -> int:
    config = JoinJobConfig(
        left=args.left, right=args.right, left_id_col=args.left_id_col, right_id_col=args.right_id_col,
        left_text_col=args.left_text_col, right_text_col=args.right_text_col,
        left_embedding_col=args.left_embedding_col, right_embedding_col=args.right_embedding_col,
        k=args.k, min_score=args.min_score, method=args.method, nlist=args.nlist, nprobe=args.nprobe,
        block_rows=args.block_rows, input_format=args.input_format, embed=embed_options(args),
        checkpoint_dir=args.checkpoint_dir,
    )
    preflight(args, [p for p in (args.left, args.right) if p], [args.output])
    if args.left_embedding_col is None or (args.right and args.right_embedding_col is None):
        check_model_early(config.embed, ["query", "passage"] if args.right else ["query"])
    with job_session("user-spark join", args) as spark, staging(
        spark, args.checkpoint_dir, output=args.output, job="join"
    ) as staged:
        start = time.perf_counter()
        metrics = EmbedMetrics.create(spark)
        write_parquet(run(spark, config, metrics, staged), args.output, args.mode)
        seconds = time.perf_counter() - start
        print(f"user-spark join: {config.method}, k={config.k}{embedded_counts(metrics, seconds)}; {seconds:.1f} s "
              f"-> {args.output}")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``user-spark join`` and ``jobs/join.py``."""
    return run_main(_main, argv, build_parser())
