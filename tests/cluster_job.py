"""Runs embedding jobs on a multi-process Spark cluster, in its own process, for ``test_multiprocess.py``.

A second SparkSession cannot share the test session's JVM, so ``test_multiprocess.py`` runs this script with
``subprocess``. It starts ``local-cluster[2,1,2048]`` (a master, two workers, two executor JVMs with their own
Python workers), so the model folder is shipped as an archive and found with ``SparkFiles.get``, then writes
three Parquet outputs of the same job and a ``result.json``:

- ``clean``: undisturbed; each row also says which Python worker embedded it and how many times that worker
  had loaded the model;
- ``kill-worker``: the Python worker embedding partition 3 exits in the middle of the job (test-only hook,
  :mod:`user_spark.runtime.faults`);
- ``kill-executor``: the executor JVM running partition 5 is SIGKILLed in the middle of the job;
- ``dedup-clean`` and ``dedup-kill-worker``: the dedup job on the same texts, undisturbed and with the Python
  worker of its first embedding batch killed (``groups`` and ``kept`` under each).

    python tests/cluster_job.py --model DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

ROWS = 240
PARTITIONS = 8


def texts(n: int) -> list[str]:
    path = os.path.join(os.path.dirname(__file__), "data", "ru_prose_sentences_300.tsv")
    with open(path, encoding="utf-8") as fh:
        sentences = [line.rstrip("\n").split("\t", 1)[1] for line in fh.readlines()[1:]]
    return [sentences[i % len(sentences)] for i in range(n)]


def frame(spark, n: int = ROWS, partitions: int = PARTITIONS):
    rows = [(i, None if i % 17 == 0 else t) for i, t in enumerate(texts(n))]
    return spark.createDataFrame(rows, "id long, text string").repartition(partitions)


def _retries(spark, group: str) -> tuple[int, int]:
    """Failed tasks and stage re-attempts of a job group (a lost executor re-runs its stage)."""
    tracker = spark.sparkContext.statusTracker()
    failed = attempts = 0
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage in info.stageIds if info else ():
            stage_info = tracker.getStageInfo(stage)
            if stage_info:
                failed += stage_info.numFailedTasks
                attempts += stage_info.currentAttemptId
    return failed, attempts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--master", default="local-cluster[2,1,2048]")
    args = parser.parse_args(argv)

    faults = os.path.join(args.out, "faults")
    os.makedirs(faults, exist_ok=True)
    os.environ["SPARK_WORKER_DIR"] = os.path.join(args.out, "spark-work")  # not site-packages/pyspark/work
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf

    from user_spark import with_embeddings

    builder = (
        SparkSession.builder.master(args.master)
        .appName("user_spark-cluster-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
        .config("spark.task.maxFailures", "4")
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.USER_SPARK_TEST_FAULT", faults)
        .config("spark.executorEnv.HF_HUB_OFFLINE", "1")
        .config("spark.executorEnv.TOKENIZERS_PARALLELISM", "false")
    )
    if os.environ.get("PYTHONPATH"):
        builder = builder.config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    model = args.model

    def worker_loads(n):
        from user_spark.runtime import worker as _worker

        loads = sum(1 for e in _worker.load_events() if e[1] == model)
        return [f"{os.getpid()}:{loads}"] * n

    # The probe must be the embedding UDF's kind (Arrow on pyspark >= 4.1): Spark runs each kind in its own worker.
    from user_spark.compat import has_arrow_udf

    if has_arrow_udf():
        import pyarrow as pa
        from pyspark.sql.functions import arrow_udf

        probe = arrow_udf(lambda col: pa.array(worker_loads(len(col))), "string")
    else:
        probe = pandas_udf(lambda col: pd.Series(worker_loads(len(col))), "string")
    df = with_embeddings(frame(spark), {"text": "passage"}, model=model)
    result: dict = {
        "driver_pid": os.getpid(),
        "master": spark.sparkContext.master,
        "location_kind": None,
        "runs": {},
    }
    from user_spark import EmbedOptions
    from user_spark.embedding.udf import prepare_embedding

    result["location_kind"] = prepare_embedding(EmbedOptions(model=model), spark=spark).location.kind
    for run, armed in [
        ("clean", None),
        ("kill-worker", ("kill-worker", "3")),
        ("kill-executor", ("kill-executor", "5")),
    ]:
        if armed:
            with open(os.path.join(faults, armed[0]), "w") as fh:
                fh.write(armed[1])
        spark.sparkContext.setJobGroup(run, run)
        start = time.perf_counter()
        out = df.select("id", "text", "text_embedding", probe("text").alias("worker"))
        out.write.mode("overwrite").parquet(os.path.join(args.out, run))
        fired = os.path.join(faults, f"{armed[0]}.fired") if armed else None
        failed, attempts = _retries(spark, run)
        result["runs"][run] = {
            "seconds": round(time.perf_counter() - start, 1),
            "failed_tasks": failed,
            "stage_reattempts": attempts,
            "fired": pathlib.Path(fired).read_text().strip() if fired and os.path.exists(fired) else None,
            "still_armed": bool(armed) and os.path.exists(os.path.join(faults, armed[0])),
        }
    from user_spark import dedup

    for run, armed in [("dedup-clean", False), ("dedup-kill-worker", True)]:
        if armed:
            open(os.path.join(faults, "kill-worker"), "w").close()  # empty: the first batch anywhere
        spark.sparkContext.setJobGroup(run, run)
        res = dedup(frame(spark).na.drop(), id_col="id", text_col="text", threshold=0.995, model=model)
        res.groups.write.mode("overwrite").parquet(os.path.join(args.out, run, "groups"))
        res.kept.write.mode("overwrite").parquet(os.path.join(args.out, run, "kept"))
        fired = os.path.join(faults, "kill-worker.fired")
        failed, attempts = _retries(spark, run)
        result["runs"][run] = {
            "failed_tasks": failed,
            "fired": pathlib.Path(fired).read_text().strip() if armed and os.path.exists(fired) else None,
            "summary": {k: int(v) for k, v in res.summary.items()},
        }
        if armed and os.path.exists(fired):
            os.remove(fired)
    return finish(spark, args.out, result)


def finish(spark: object, out: str, result: dict) -> int:
    """Stop Spark and write what the job found to ``<out>/result.json`` for the test to read; exit status 0."""
    if spark is not None:
        spark.stop()  # type: ignore[attr-defined]
    with open(os.path.join(out, "result.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
