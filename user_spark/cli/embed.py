"""The embed job: read a table, add an embedding column per text column (each with its role), write Parquet.

    user-spark embed --input docs.parquet --output docs_emb --column body:passage --column title:query

Every input column is kept; each ``--column NAME:ROLE`` adds ``NAME_embedding`` (array<float>).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from user_spark.cli.flags import add_embedding_arguments, check_model_early, embed_options, parse_column, positive_int
from user_spark.cli.session import (
    add_io_arguments,
    add_spark_arguments,
    job_session,
    preflight,
    read_input,
    run_main,
    write_parquet,
)
from user_spark.connect import default_parallelism, num_partitions
from user_spark.embedding.frame import with_embeddings
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions
from user_spark.errors import OptionError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["EmbedJobConfig", "build_parser", "main", "run", "spread"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedJobConfig:
    """What the embed job does. ``columns`` is a list of ``(text column, role)``."""

    input: str
    columns: tuple[tuple[str, str], ...]
    embed: EmbedOptions = field(default_factory=EmbedOptions)
    input_format: str = "auto"
    suffix: str = "_embedding"
    partitions: int | None = None

    def __post_init__(self) -> None:
        if not self.columns:
            raise OptionError("Name at least one text column to embed: --column NAME[:ROLE]")
        if len({name for name, _ in self.columns}) != len(self.columns):
            raise OptionError(f"--column names a column twice: {[name for name, _ in self.columns]}")
        if self.partitions is not None and self.partitions < 1:
            raise OptionError(f"--partitions must be >= 1, got {self.partitions}")


def spread(df: DataFrame, partitions: int) -> DataFrame:
    """At least ``partitions`` partitions, keeping row order (range partitioning on the original position).

    Over Spark Connect the current count is unknown, so the frame is always range-partitioned into
    ``partitions``: one shuffle, which the caller asked for by passing ``partitions``.
    """
    from pyspark.sql import functions as F

    current = num_partitions(df)
    if current is not None and current >= partitions:
        return df
    pos = "__user_spark_pos"
    return df.withColumn(pos, F.monotonically_increasing_id()).repartitionByRange(partitions, pos).drop(pos)


def run(spark: SparkSession, config: EmbedJobConfig, metrics: EmbedMetrics | None = None) -> DataFrame:
    """The input with its embedding columns added (nothing is written or computed yet).

    ``metrics``, if given, counts the rows, tokens and truncated texts once an action runs.
    """
    df = read_input(spark, config.input, config.input_format)
    if config.partitions:
        df = spread(df, config.partitions)
    return with_embeddings(df, dict(config.columns), options=config.embed, suffix=config.suffix, metrics=metrics)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-spark embed", description="Add sentence embeddings to text columns of a table."
    )
    add_io_arguments(parser)
    parser.add_argument("--column", action="append", required=True, metavar="NAME[:ROLE]",
                        help="text column to embed and its role (query or passage; default query), repeatable")
    parser.add_argument("--suffix", default="_embedding", help="output column suffix (default: %(default)s)")
    add_embedding_arguments(parser, writes=True)
    parser.add_argument("--partitions", type=positive_int,
                        help="spread the input over at least this many partitions (default: Spark's parallelism)")
    add_spark_arguments(parser)
    return parser


def _summary(metrics: EmbedMetrics, columns: int, seconds: float, output: str) -> str:
    counts = metrics.as_dict()
    rows = counts["rows"]
    if rows is None:  # Spark Connect: no accumulators, and no extra job just to count
        return (f"user-spark embed: {columns} column(s) embedded in {seconds:.1f} s (Spark Connect gives no counts) "
                f"-> {output}")
    return (
        f"user-spark embed: {rows} texts in {columns} column(s), {counts['tokens']} tokens, "
        f"{counts['truncated']} truncated, {counts['nulls']} null; {seconds:.1f} s, "
        f"{rows / seconds if seconds else 0:.1f} texts/s -> {output}"
    )


def _main(args: argparse.Namespace) -> int:
    columns = tuple(parse_column(c) for c in args.column)
    options = embed_options(args)
    config = EmbedJobConfig(
        input=args.input,
        columns=columns,
        embed=options,
        input_format=args.input_format,
        suffix=args.suffix,
        partitions=args.partitions,
    )
    preflight(args, [args.input], [args.output])
    check_model_early(options, [role for _, role in columns])
    with job_session("user-spark embed", args) as spark:
        if config.partitions is None:
            config = replace(config, partitions=default_parallelism(spark))
        metrics = EmbedMetrics.create(spark)
        df = run(spark, config, metrics)
        start = time.perf_counter()
        write_parquet(df, args.output, args.mode)
        print(_summary(metrics, len(columns), time.perf_counter() - start, args.output))
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``user-spark embed`` and ``jobs/embed.py``."""
    return run_main(_main, argv, build_parser())
