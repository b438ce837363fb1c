"""Flag groups the jobs share, and what they build: one embedding flag group -> :class:`EmbedOptions`.

Every job that embeds text (``embed``, ``enrich``, ``dedup``, ``cluster``, ``join``) has the same embedding
flags; the ones that write embeddings (``embed``, ``enrich``) also have ``--storage``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from user_spark.embedding.metrics import EmbedMetrics
from user_spark.embedding.options import EmbedOptions
from user_spark.embedding.storage import STORAGES
from user_spark.errors import OptionError
from user_spark.model.roles import DEFAULT_ROLE, prefix_for
from user_spark.model.shipping import SHIPS
from user_spark.model.source import DEFAULT_MODEL, classify_model_source, fetch_hub_model
from user_spark.model.spec import read_model_spec
from user_spark.runtime.settings import PRECISIONS, check_device_request

__all__ = [
    "add_checkpoint_argument",
    "add_embedding_arguments",
    "add_vector_arguments",
    "check_model_early",
    "embed_options",
    "embedded_counts",
    "parse_column",
    "positive_int",
    "write_json",
]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _device(text: str) -> str:
    try:
        return check_device_request(text)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint-dir``: where a job stages what it must not lose (embeddings, rows to embed)."""
    parser.add_argument(
        "--checkpoint-dir",
        help="folder every executor reads, for intermediates that must survive a lost executor (default: "
        "spark.checkpoint.dir, else _user_spark_staging next to the output); deleted at the end",
    )


def add_embedding_arguments(parser: argparse.ArgumentParser, *, writes: bool = False) -> None:
    """How the model runs: ``--model``, ``--revision``, ``--ship``, ``--batch-tokens``, ``--device``,
    ``--precision``; where the job writes embeddings also ``--storage`` and ``--model-revision``."""
    group = parser.add_argument_group("embedding")
    group.add_argument("--model", default=DEFAULT_MODEL,
                       help="hub id, local folder or hdfs://, s3a://, dbfs:/ URI (default: %(default)s)")
    group.add_argument("--revision", help="hub revision (branch, tag or commit) to fetch")
    group.add_argument("--ship", choices=SHIPS, default="auto",
                       help="copy the model folder to executors: auto (when they cannot see it), always, or never "
                            "(a path every node mounts, e.g. /Volumes/... on Databricks) (default: auto)")
    group.add_argument("--batch-tokens", type=positive_int, help="tokens per model batch, padding included")
    group.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="auto (exact fp32 on CPU, half precision on GPU), fast, fp32, fp16, bf16 or int8 "
                            "(default: auto)")
    if writes:
        group.add_argument("--storage", default="float32", choices=STORAGES,
                           help="float32 (array<float>) or float16 (binary, half the bytes) (default: float32)")
        group.add_argument("--model-revision",
                           help="revision recorded in the output's metadata (default: the hub commit, or a hash of "
                                "the weight files; set it to skip hashing the weights)")


def embed_options(args: argparse.Namespace) -> EmbedOptions:
    """The :class:`EmbedOptions` of :func:`add_embedding_arguments`' flags."""
    return EmbedOptions(
        model=args.model,
        revision=args.revision,
        model_revision=getattr(args, "model_revision", None),
        ship=args.ship,
        batch_tokens=args.batch_tokens,
        device=args.device,
        precision=args.precision,
        storage=getattr(args, "storage", "float32"),
    )


def add_vector_arguments(parser: argparse.ArgumentParser, prefix: str = "", side: str = "") -> None:
    what = f" of the {side} side" if side else ""
    parser.add_argument(
        f"--{prefix}text-col", help=f"text column{what} (embedded with --model unless an embedding column is given)"
    )
    parser.add_argument(f"--{prefix}embedding-col", help=f"existing array<float> embedding column{what}")


def parse_column(spec: str) -> tuple[str, str]:
    """``"body:passage"`` -> ``("body", "passage")``; ``"body"`` -> ``("body", "query")``.

    >>> parse_column("body:passage")
    ('body', 'passage')
    """
    name, sep, role = spec.rpartition(":")
    if not sep:
        name, role = spec, DEFAULT_ROLE
    if not name or not role:
        raise OptionError(f"--column expects NAME or NAME:ROLE (e.g. body:passage), got {spec!r}")
    return name, role


def embedded_counts(metrics: EmbedMetrics, seconds: float) -> str:
    """``"; 1200 texts embedded, 51234 tokens, 3 truncated, 31.5 texts/s"``, or ``""`` when the job embedded no
    text (it was given vectors) or Spark Connect gives no counts."""
    counts = metrics.as_dict()
    rows = counts["rows"]
    if not rows:
        return ""
    return (
        f"; {rows} texts embedded, {counts['tokens']} tokens, {counts['truncated']} truncated, "
        f"{rows / seconds if seconds else 0:.1f} texts/s"
    )


def write_json(path: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)


def check_model_early(options: EmbedOptions, roles: Sequence[str]) -> None:
    """Before Spark starts: a local model folder (or a hub model, fetched now into the local cache) must exist,
    be whole, and know every role asked for. URIs (``hdfs://`` ...) are checked once the session can read them,
    still before any job.
    """
    source = classify_model_source(options.model)
    if source.kind == "remote":
        return
    folder = source.location
    if source.kind == "hub":
        folder = fetch_hub_model(folder, revision=options.revision, allow_pickle=options.allow_pickle)
    spec = read_model_spec(folder, prompts=options.prompts, allow_pickle=options.allow_pickle)
    for role in roles:
        prefix_for(role, spec.prompts)
