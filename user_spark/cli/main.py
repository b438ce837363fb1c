"""``user-spark``: one command, a subcommand per job.

    user-spark embed --input docs.parquet --output out --column body:passage
    user-spark dedup --input docs.parquet --output out --id-col id --text-col body
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["JOBS", "main"]

# subcommand -> module under user_spark.cli with build_parser() and main(argv)
JOBS = {
    "embed": "Add sentence embeddings to text columns of a table.",
    "dedup": "Drop exact and near-duplicate rows (cosine of embeddings).",
    "cluster": "Cluster rows by their embeddings (k-means, cosine); writes a PNG too.",
    "join": "Top-k most similar rows of one table for each row of another (or itself).",
    "enrich": "Embed only the rows a growing table's output does not hold yet (incremental, resumable).",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-spark", description="Sentence embeddings and the jobs they enable, on Spark."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="job", metavar="JOB")
    for name, help_text in JOBS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _version() -> str:
    from user_spark import __version__

    return f"user-spark {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``user-spark JOB ...`` to ``user_spark.cli.JOB.main``."""
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not args or args[0] not in JOBS:
        parser.parse_args(args or ["--help"])
        return 2
    module = importlib.import_module(f"user_spark.cli.{args[0]}")
    return int(module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
