"""Flags the dedup, cluster and join jobs share: where vectors come from (text + model, or an embedding column)."""

from __future__ import annotations

import argparse
import json
import os

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from user_spark.errors import OptionError
from user_spark.embedding.metrics import EmbedMetrics
from user_spark.model.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["add_vector_arguments", "embed_options", "embedded_counts", "is_local", "local_path", "with_metrics",
           "write_json"]


def add_vector_arguments(parser: argparse.ArgumentParser, prefix: str = "", side: str = "") -> None:
    what = f" of the {side} side" if side else ""
    parser.add_argument(f"--{prefix}text-col", help=f"text column{what} (embedded with --model unless an embedding column is given)")
    parser.add_argument(f"--{prefix}embedding-col", help=f"existing array<float> embedding column{what}")


def require_vectors(text_col: str | None, embedding_col: str | None) -> None:
    """A job needs a text column to embed or an embedding column; raise if it has neither."""
    if text_col is None and embedding_col is None:
        raise OptionError("Name the text column (--text-col) or an embedding column (--embedding-col)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--ship``, ``--batch-tokens``, ``--device``: how every job that embeds text runs the model."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id, local folder or hdfs://, s3a://, dbfs:/ URI (default: %(default)s)")
    parser.add_argument("--ship", choices=("auto", "always", "never"), default="auto",
                        help="copy the model folder to executors: auto (when they cannot see it), always, or never "
                             "(a path every node mounts, e.g. /Volumes/... on Databricks) (default: auto)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per model batch, padding included")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def embed_options(args: argparse.Namespace) -> dict:
    """The :func:`user_spark.with_embeddings` options of :func:`add_model_arguments`'s flags."""
    options: dict = {"device": args.device, "ship": args.ship}
    if args.batch_tokens:
        options["batch_tokens"] = args.batch_tokens
    return options


def with_metrics(config: Any, spark: SparkSession) -> tuple[Any, EmbedMetrics]:
    """``config`` with counters added to its ``embed_options``, and the counters (read them after the job)."""
    metrics = EmbedMetrics.create(spark)
    return replace(config, embed_options={**config.embed_options, "metrics": metrics}), metrics


def embedded_counts(metrics: EmbedMetrics, seconds: float) -> str:
    """``"; 1200 texts embedded, 51234 tokens, 3 truncated, 31.5 texts/s"``, or ``""`` when the job embedded no
    text (it was given vectors) or Spark Connect gives no counts."""
    counts = metrics.as_dict()
    if not counts["rows"]:
        return ""
    return (f"; {counts['rows']} texts embedded, {counts['tokens']} tokens, {counts['truncated']} truncated, "
            f"{counts['rows'] / seconds if seconds else 0:.1f} texts/s")


def local_path(path: str) -> str | None:
    """The local filesystem path of ``path``, or ``None`` when it is on another filesystem (hdfs://, s3a://)."""
    if path.startswith("file:"):
        return path[len("file:"):]
    return None if "://" in path else path


def is_local(path: str) -> bool:
    return local_path(path) is not None


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)
