"""The ``user-spark`` command and the spark-submit jobs: argument parsing, session setup, writing.

Each job module (``embed``, ``dedup``, ``cluster``, ``join``, ``enrich``) has ``build_parser()``,
``run(spark, config)`` (no writes, callable from a notebook) and ``main(argv=None) -> int`` (parse, start Spark,
run, write, stop). :func:`main` dispatches ``user-spark JOB ...`` to them.
"""

from __future__ import annotations

from user_spark.cli.main import JOBS, main

__all__ = ["JOBS", "main"]
