"""The enrich job: embed only the rows of a table that its enrichment output does not hold yet.

    user-spark enrich --input /lake/docs --input-format parquet --output /lake/docs_emb --id-col id \
        --column body:passage

Re-run it whenever new rows arrive, or after a crash: it embeds what is missing and appends it in batches
(see :mod:`user_spark.pipelines.enrich`). Ends with one summary line.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from user_spark.cli.flags import (
    add_checkpoint_argument,
    add_embedding_arguments,
    check_model_early,
    embed_options,
    parse_column,
    positive_int,
)
from user_spark.cli.session import add_spark_arguments, job_session, preflight, read_input, run_main
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.errors import OptionError
from user_spark.pipelines.enrich import DEFAULT_COMMIT_ROWS, OUTPUT_FORMATS, EnrichResult, enrich

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-spark enrich",
        description="Embed the rows of a table that the output does not hold yet (incremental, resumable).",
    )
    parser.add_argument("--input", required=True, help="input path, or a table name with --input-format table")
    parser.add_argument("--input-format", default="auto",
                        help="auto (from file names), parquet, json, csv, orc, delta, any Spark source, or table")
    parser.add_argument("--output", required=True, help="output table path (appended to; created by the first run)")
    parser.add_argument("--format", default="parquet", dest="output_format", choices=OUTPUT_FORMATS,
                        help="output table format: parquet (default) or delta (Databricks)")
    parser.add_argument("--id-col", required=True, help="unique id column of the input")
    parser.add_argument("--column", action="append", required=True, metavar="NAME[:ROLE]",
                        help="text column to embed and its role (query or passage; default query), repeatable")
    parser.add_argument("--commit-rows", type=positive_int, default=DEFAULT_COMMIT_ROWS,
                        help="rows per committed batch; a crash loses at most one batch (default: %(default)s)")
    parser.add_argument("--partitions", type=positive_int,
                        help="tasks per batch (default: Spark's default parallelism)")
    parser.add_argument("--compact", action="store_true",
                        help="afterwards, rewrite the output with one row per id (old versions of changed rows go)")
    add_checkpoint_argument(parser)
    add_embedding_arguments(parser, writes=True)
    add_spark_arguments(parser)
    return parser


def _summary(res: EnrichResult, columns: int, seconds: float, output: str) -> str:
    counts = res.metrics
    tokens = "" if counts["tokens"] is None else f", {counts['tokens']} tokens, {counts['truncated']} truncated"
    compacted = "" if res.compacted is None else (
        f"; compacted {res.compacted.rows_before} rows to {res.compacted.rows_after}")
    return (
        f"user-spark enrich: {res.rows_embedded} new rows embedded ({columns} column(s)) in "
        f"{len(res.batches)} batch(es){tokens}; {seconds:.1f} s, "
        f"{res.rows_embedded / seconds if seconds else 0:.1f} rows/s; model revision {res.model_revision}, "
        f"{res.precision[0]} on {res.precision[1]}{compacted} -> {output}"
    )


def _main(args: argparse.Namespace) -> int:
    pairs = [parse_column(c) for c in args.column]
    columns = dict(pairs)
    if len(columns) != len(pairs):
        raise OptionError(f"--column names a column twice: {args.column}")
    options = embed_options(args)
    preflight(args, [args.input])
    check_model_early(options, list(columns.values()))
    with job_session("user-spark enrich", args) as spark:
        df = read_input(spark, args.input, args.input_format)
        start = time.perf_counter()
        res = enrich(
            df, args.output, id_col=args.id_col, columns=columns, output_format=args.output_format,
            commit_rows=args.commit_rows, partitions=args.partitions, embed_options=options,
            metrics=EmbedMetrics.create(spark), checkpoint_dir=args.checkpoint_dir, compact=args.compact,
        )
        print(_summary(res, len(columns), time.perf_counter() - start, args.output))
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``user-spark enrich`` and ``jobs/enrich.py``."""
    return run_main(_main, argv, build_parser())
