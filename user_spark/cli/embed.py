"""The embed job: read a table, add an embedding column per text column (each with its role), write Parquet.

    user-spark embed --input docs.parquet --output docs_emb --column body:passage --column title:query

Every input column is kept; each ``--column NAME:ROLE`` adds ``NAME_embedding`` (array<float>).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from user_spark.connect import default_parallelism, num_partitions
from user_spark.errors import OptionError
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.model.source import DEFAULT_MODEL
from user_spark.model.roles import DEFAULT_ROLE
from user_spark.embedding.udf import with_embeddings
from user_spark.cli.session import (
    add_embedding_arguments,
    add_io_arguments,
    add_spark_arguments,
    job_session,
    read_input,
    run_main,
    write_parquet,
)
from user_spark.cli.flags import add_model_arguments

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["EmbedJobConfig", "parse_column", "run", "build_parser", "main"]

logger = logging.getLogger(__name__)


def parse_column(spec: str) -> tuple[str, str]:
    """``"body:passage"`` -> ``("body", "passage")``; ``"body"`` -> ``("body", "query")``."""
    name, sep, role = spec.rpartition(":")
    if not sep:
        name, role = spec, DEFAULT_ROLE
    if not name or not role:
        raise OptionError(f"--column expects NAME or NAME:ROLE (e.g. body:passage), got {spec!r}")
    return name, role


@dataclass(frozen=True)
class EmbedJobConfig:
    """What the embed job does. ``columns`` is a list of ``(text column, role)``."""

    input: str
    columns: tuple[tuple[str, str], ...]
    model: str = DEFAULT_MODEL
    input_format: str = "auto"
    suffix: str = "_embedding"
    batch_tokens: int | None = None
    device: str = "auto"
    precision: str = "auto"
    partitions: int | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.columns:
            raise OptionError("Name at least one text column to embed: --column NAME[:ROLE]")
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
    return with_embeddings(
        df,
        dict(config.columns),
        model=config.model,
        suffix=config.suffix,
        batch_tokens=config.batch_tokens,
        device=config.device,
        precision=config.precision,
        metrics=metrics,
        **config.options,
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="user-spark embed", description="Add sentence embeddings to text columns of a table."
    )
    add_io_arguments(parser)
    parser.add_argument("--column", action="append", required=True, metavar="NAME[:ROLE]",
                        help="text column to embed and its role (query or passage; default query), repeatable")
    parser.add_argument("--suffix", default="_embedding", help="output column suffix (default: %(default)s)")
    add_model_arguments(parser)
    add_embedding_arguments(parser)
    parser.add_argument("--partitions", type=int,
                        help="spread the input over at least this many partitions (default: Spark's parallelism)")
    add_spark_arguments(parser)
    return parser


def _main(args: argparse.Namespace) -> int:
    with job_session("user-spark embed", args) as spark:
        partitions = args.partitions or default_parallelism(spark)
        config = EmbedJobConfig(
            input=args.input,
            columns=tuple(parse_column(c) for c in args.column),
            model=args.model,
            input_format=args.input_format,
            suffix=args.suffix,
            batch_tokens=args.batch_tokens,
            device=args.device,
            precision=args.precision,
            partitions=partitions,
            options={"storage": args.storage, "ship": args.ship},
        )
        metrics = EmbedMetrics.create(spark)
        df = run(spark, config, metrics)
        start = time.perf_counter()
        write_parquet(df, args.output, args.mode)
        seconds = time.perf_counter() - start
        counts = metrics.as_dict()
        if counts["rows"] is None:  # Spark Connect: no accumulators, and no extra job just to count
            print(f"user-spark embed: {len(config.columns)} column(s) embedded in {seconds:.1f} s (Spark Connect "
                  f"gives no counts) -> {args.output}")
            return 0
        rows = counts["rows"]
        print(
            f"user-spark embed: {rows} texts in {len(config.columns)} column(s), {counts['tokens']} tokens, "
            f"{counts['truncated']} truncated, {counts['nulls']} null; {seconds:.1f} s, "
            f"{rows / seconds if seconds else 0:.1f} texts/s -> {args.output}"
        )
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``user-spark embed`` and ``jobs/embed.py``."""
    return run_main(_main, argv, build_parser())
