"""A similarity join on a multi-process cluster that loses an executor after its embeddings are staged.

Run by ``tests/system/test_lost_executor.py`` in its own process (a second SparkSession cannot share the test
session's JVM). It starts ``local-cluster[2,1,1024]`` and runs a text self-join whose embeddings are staged
under ``--checkpoint-dir``. Once :func:`~user_spark.similarity_join` has returned (the embeddings are
written) and before the join itself runs (the write of its pairs), it SIGKILLs one of this cluster's executor
JVMs (a grandchild of this process: the driver JVM starts them). The join must complete, with every row
embedded once. Writes the pairs under ``--out/pairs`` and ``--out/result.json``.

    python tests/lost_executor_job.py --model DIR --out DIR [--checkpoint-dir DIR]

Without ``--checkpoint-dir`` (no shared folder: embeddings are local checkpoints) the same kill fails the job;
``result.json`` then holds the error.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import time

from cluster_job import finish

ROWS = 240


def _executors() -> list[int]:
    """Executor JVMs started for this process's cluster (children of its driver JVM)."""
    me = os.getpid()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"CoarseGrainedExecutorBackend" not in fh.read():
                    continue
            with open(f"/proc/{pid}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{parent}/stat") as fh:
                grandparent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if grandparent == me:
            found.append(int(pid))
    return sorted(found)


def _kill_one(record: dict) -> None:
    victims = _executors()
    os.kill(victims[0], signal.SIGKILL)
    record.update(killed_pid=victims[0], executors_before=len(victims))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint-dir")
    args = parser.parse_args(argv)
    os.environ["SPARK_WORKER_DIR"] = os.path.join(args.out, "spark-work")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from cluster_job import frame
    from pyspark.sql import SparkSession

    from user_spark import EmbedMetrics, similarity_join, staging

    builder = (
        SparkSession.builder.master("local-cluster[2,1,1024]").appName("user_spark-lost-executor")
        .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "8").config("spark.task.maxFailures", "4")
        .config("spark.sql.shuffle.partitions", "4").config("spark.executorEnv.HF_HUB_OFFLINE", "1")
        .config("spark.executorEnv.TOKENIZERS_PARALLELISM", "false")
    )
    if os.environ.get("PYTHONPATH"):
        builder = builder.config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    df = frame(spark, ROWS, 6)
    metrics = EmbedMetrics.create(spark)
    record: dict = {"rows": ROWS}
    start = time.time()
    try:
        with staging(spark, args.checkpoint_dir, job="join") as staged:
            record["durable"] = staged.durable
            pairs = similarity_join(df, left_id_col="id", left_text_col="text", k=5, model=args.model,
                                    metrics=metrics, checkpoint_dir=staged)
            record["staged"] = sorted(os.path.basename(p) for p in glob.glob(f"{staged.path}/*"))
            _kill_one(record)  # the embeddings are staged (or checkpointed); the join has not run yet
            pairs.write.parquet(os.path.join(args.out, "pairs"))
        record["error"] = None
    except Exception as exc:  # the run without a shared folder: the lost checkpoint blocks fail the join
        record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    record.update(seconds=round(time.time() - start, 1), embedded=metrics.as_dict()["rows"],
                  staged_left=sorted(glob.glob(f"{args.checkpoint_dir}/*")) if args.checkpoint_dir else [])
    return finish(spark, args.out, record)


if __name__ == "__main__":
    raise SystemExit(main())
