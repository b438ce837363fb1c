"""What every job's ``main`` shares: the Spark session, reading the input, writing Parquet, the common flags."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from user_spark.compat import error_condition
from user_spark.errors import OptionError, UserSparkError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "INPUT_FORMATS",
    "add_io_arguments",
    "add_spark_arguments",
    "build_session",
    "detect_format",
    "job_session",
    "local_path",
    "parse_confs",
    "preflight",
    "read_input",
    "run_main",
    "write_parquet",
]

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("auto", "parquet", "json", "csv", "orc", "delta", "table")
_EXTENSIONS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
    ".csv": "csv", ".tsv": "csv",
    ".orc": "orc",
}


def add_spark_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Spark")
    group.add_argument(
        "--master",
        help="Spark master URL (default: local[*] when run directly; the cluster's when run by spark-submit)",
    )
    group.add_argument(
        "--remote", metavar="URL",
        help="Spark Connect server (sc://host:15002, or local[N] to start one here) instead of --master",
    )
    group.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark configuration, repeatable"
    )


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="input path or glob (Parquet, JSON lines, CSV or ORC)")
    parser.add_argument("--output", required=True, help="output folder (Parquet)")
    parser.add_argument(
        "--input-format", choices=INPUT_FORMATS, default="auto",
        help="input format (default: from the file names); table: --input is a catalog table name",
    )
    parser.add_argument("--mode", choices=("errorifexists", "overwrite"), default="errorifexists",
                        help="what to do when the output exists (default: fail)")


def parse_confs(items: Sequence[str]) -> dict[str, str]:
    confs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--conf expects KEY=VALUE, got {item!r}")
        confs[key.strip()] = value
    return confs


def _under_spark_submit() -> bool:
    # spark-submit (and the pyspark shell) start Python with a gateway to an already running JVM.
    return "PYSPARK_GATEWAY_PORT" in os.environ


@contextlib.contextmanager
def job_session(app_name: str, args: argparse.Namespace) -> Iterator[SparkSession]:
    """A job's Spark session from its ``--master``/``--conf`` flags; stopped at the end only if the job started it."""
    spark, created = build_session(app_name, args.master, parse_confs(args.conf), remote=getattr(args, "remote", None))
    try:
        yield spark
    finally:
        if created:
            spark.stop()


def _check_master_or_remote(master: str | None, remote: str | None) -> None:
    if master and (remote or "SPARK_REMOTE" in os.environ):
        given = f"--remote {remote}" if remote else f"SPARK_REMOTE={os.environ['SPARK_REMOTE']}"
        raise OptionError(
            f"--master {master} and {given} exclude each other: a session is classic or Spark Connect; give one"
            + ("" if remote else " (unset SPARK_REMOTE to use --master)")
        )


def build_session(
    app_name: str, master: str | None, confs: dict[str, str], *, remote: str | None = None
) -> tuple[SparkSession, bool]:
    """The active session if there is one (a notebook), else a new one. Returns ``(session, created)``.

    ``remote`` (or the ``SPARK_REMOTE`` environment variable, which pyspark reads itself) makes it a Spark
    Connect session; a master cannot be given with it.
    """
    from pyspark.sql import SparkSession

    _check_master_or_remote(master, remote)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName(app_name)
    if remote:
        builder = builder.remote(remote)
    elif master:
        builder = builder.master(master)
    elif not _under_spark_submit() and "SPARK_REMOTE" not in os.environ:
        builder = builder.master("local[*]")
    if not _under_spark_submit():
        # Executors' Python must be this interpreter (the one with user_spark and torch installed).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    if not (remote or "SPARK_REMOTE" in os.environ):
        # A person running a job sees each stage's progress on stderr (Spark turns this on only in its shells;
        # a Connect client shows its own progress).
        builder = builder.config("spark.ui.showConsoleProgress", "true")
    for key, value in confs.items():
        builder = builder.config(key, value)
    return builder.getOrCreate(), True


def detect_format(path: str) -> str:
    """The input format from file names: a file's extension, or the data files inside a local folder."""
    candidates = [path]
    local = local_path(path) or path
    if os.path.isdir(local):
        candidates = [
            name for name in sorted(os.listdir(local)) if not name.startswith(("_", ".")) and not name.endswith(".crc")
        ]
    for name in candidates:
        base = name[:-3] if name.endswith(".gz") else name
        ext = os.path.splitext(base)[1].lower()
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
    if os.path.isdir(local) and candidates and all(c.startswith("part-") for c in candidates):
        return "parquet"  # Spark's own output without extensions
    if local_path(path) is not None and not _GLOB.search(path) and not os.path.exists(local):
        raise OptionError(f"Input {path!r} does not exist")
    raise OptionError(f"Cannot tell the format of {path!r} from its file names; pass --input-format")


def read_input(spark: SparkSession, path: str, fmt: str = "auto") -> DataFrame:
    """Read ``path`` as ``fmt`` (``auto``: from the file names); ``fmt="table"`` reads a catalog table by name."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "table":
        from pyspark.errors import AnalysisException

        try:
            return spark.read.table(path)
        except AnalysisException as exc:
            raise OptionError(f"Cannot read table {path!r}: {str(exc).splitlines()[0]}") from None
    reader = spark.read
    if fmt == "csv":
        reader = reader.option("header", "true").option("multiLine", "true").option("escape", '"')
        if path.lower().endswith((".tsv", ".tsv.gz")):
            reader = reader.option("sep", "\t")
    from pyspark.errors import AnalysisException

    try:
        return reader.format(fmt).load(path)
    except AnalysisException as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        if error_condition(exc) == "PATH_NOT_FOUND":
            raise OptionError(f"Input {path!r} does not exist ({reason})") from None
        raise OptionError(f"Cannot read {path!r} as {fmt}: {reason}") from None


_SCHEME = re.compile(r"^[A-Za-z][\w+.-]+:")  # hdfs:, s3a:, dbfs:, abfss:, file: (one letter is a drive)
_FILE_FORMATS = ("auto", "parquet", "json", "csv", "orc", "delta")
_GLOB = re.compile(r"[*?\[{]")


def local_path(path: str) -> str | None:
    """The local filesystem path of ``path``, or ``None`` when it names another filesystem (``hdfs://``,
    ``s3a://``, ``dbfs:/``, ...)."""
    if path.startswith("file:"):
        return path[len("file:") :]
    return None if _SCHEME.match(path) else path


def _paths_are_this_machines(args: argparse.Namespace) -> bool:
    """Whether the job's paths name this machine's files: the session the job will use (the running one, else
    the one it starts) is classic Spark with a local master, and not one spark-submit set up."""
    from pyspark.sql import SparkSession

    from user_spark.connect import is_connect, is_local_master

    active = SparkSession.getActiveSession()
    if active is not None:
        return not is_connect(active) and is_local_master(active.sparkContext.master)
    if _under_spark_submit() or getattr(args, "remote", None) or "SPARK_REMOTE" in os.environ:
        return False
    return is_local_master(args.master or "local[*]")


def preflight(args: argparse.Namespace, inputs: Sequence[str], outputs: Sequence[str] = ()) -> None:
    """Before Spark starts: ``--master`` and ``--remote`` do not both name a session; when the paths are this
    machine's, every input file or folder exists and, with ``--mode errorifexists``, no output does (on a cluster
    or a Connect server Spark checks them itself).

    Raises:
        OptionError: naming the missing input or the existing output and what to do.
    """
    _check_master_or_remote(args.master, getattr(args, "remote", None))
    if not _paths_are_this_machines(args):
        return
    fmt = getattr(args, "input_format", "auto")
    for path in inputs:
        local = local_path(path)
        if fmt in _FILE_FORMATS and local is not None and not _GLOB.search(path) and not os.path.exists(local):
            raise OptionError(f"Input {path!r} does not exist")
    if getattr(args, "mode", "errorifexists") != "errorifexists":
        return
    for path in outputs:
        local = local_path(path)
        if local is not None and os.path.exists(local):
            raise OptionError(
                f"Output {path!r} already exists; choose another --output, or pass --mode overwrite to replace it"
            )


def write_parquet(df: DataFrame, path: str, mode: str) -> None:
    # Spark Connect's writer (pyspark 4.3) knows "error" but rejects its classic alias "errorifexists".
    df.write.mode("error" if mode == "errorifexists" else mode).parquet(path)


def run_main(
    main_body: Callable[[argparse.Namespace], int], argv: Sequence[str] | None, parser: argparse.ArgumentParser
) -> int:
    """Parse, configure logging, run ``main_body(args)``.

    A :class:`UserSparkError` or a Spark ``AnalysisException`` (a path, table or column problem) becomes one
    ``error:`` line on stderr and exit code 2, as argparse's own errors do.
    """
    from pyspark.errors import AnalysisException

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        return int(main_body(args) or 0)
    except UserSparkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AnalysisException as exc:
        print(f"error: {(str(exc).splitlines() or [type(exc).__name__])[0]}", file=sys.stderr)
        return 2
