"""Flags the dedup, cluster and join jobs share: where vectors come from (text + model, or an embedding column)."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import OptionError
from ..model_source import DEFAULT_MODEL

__all__ = ["add_vector_arguments", "embed_options", "is_local", "local_path", "write_json"]


def add_vector_arguments(parser: argparse.ArgumentParser, prefix: str = "", side: str = "") -> None:
    what = f" of the {side} side" if side else ""
    parser.add_argument(f"--{prefix}text-col", help=f"text column{what} (embedded with --model unless an embedding column is given)")
    parser.add_argument(f"--{prefix}embedding-col", help=f"existing array<float> embedding column{what}")


def require_vectors(text_col: str | None, embedding_col: str | None) -> None:
    """A job needs a text column to embed or an embedding column; raise if it has neither."""
    if text_col is None and embedding_col is None:
        raise OptionError("Name the text column (--text-col) or an embedding column (--embedding-col)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="model for text columns: hub id, local folder or URI (default: %(default)s)")
    parser.add_argument("--batch-tokens", type=int, help="tokens per model batch, padding included")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def embed_options(args: argparse.Namespace) -> dict:
    options: dict = {"device": args.device}
    if args.batch_tokens:
        options["batch_tokens"] = args.batch_tokens
    return options


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
