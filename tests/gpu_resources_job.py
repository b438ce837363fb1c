"""Spark with fake GPUs, in its own process, for ``tests/system/test_gpu_resources.py``.

Spark's side of GPU scheduling is real here: a discovery script advertises GPUs ``0`` and ``1`` to a
``local-cluster`` worker, executors get both, and tasks get addresses in ``TaskContext.resources()``. Only CUDA
is fake (``USER_SPARK_TEST_FAKE_GPUS=2`` on the executors): the Python workers believe they have two GPUs and
compute on the CPU, so placement, worker reuse across addresses and release run as they would on GPUs. Runs:

- ``unassigned``: ``local[2]`` with no GPU scheduling at all, two fake GPUs visible;
- ``overflow``: the UDF in fp16 on a model whose one token overflows float16 (metrics count the fp32 recomputes);
- ``one-per-gpu``: ``spark.task.resource.gpu.amount=1``, two task slots, 64 tasks;
- ``half-gpu``: amount 0.5, four task slots sharing the two GPUs.

Every row also records, from a probe UDF in the same Python worker: its pid, the task's GPU addresses, the
device the worker's model sits on, how many models it holds, and its placement events so far.

    python tests/gpu_resources_job.py --model DIR --overflow-model DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys

from cluster_job import finish, texts

ROWS = 640
PARTITIONS = 64

__all__ = ["ROWS", "main", "texts"]


def probe_value(n: int) -> list[str]:
    from pyspark import TaskContext

    from user_spark.runtime import worker

    ctx = TaskContext.get()
    gpu = ctx.resources().get("gpu") if ctx is not None else None
    value = json.dumps({
        "pid": os.getpid(), "addresses": list(gpu.addresses) if gpu is not None else [], "device": worker._device,
        "models": len(worker._encoders), "sharers": worker.gpu_sharers(),
        "events": [[e.action, e.device, e.collected] for e in worker.events()],
    })
    return [value] * n


def session(master: str, out: str, gpu_amount: str | None, registry: str):
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master).appName("user_spark-gpu-resources")
        .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4")
        .config("spark.task.maxFailures", "1").config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.USER_SPARK_TEST_FAKE_GPUS", "2")
        .config("spark.executorEnv.USER_SPARK_GPU_REGISTRY", registry)
        .config("spark.executorEnv.HF_HUB_OFFLINE", "1")
        .config("spark.executorEnv.TOKENIZERS_PARALLELISM", "false")
    )
    if os.environ.get("PYTHONPATH"):
        builder = builder.config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
    if gpu_amount is not None:
        script = os.path.join(out, "discover-gpus.sh")
        with open(script, "w") as fh:
            fh.write('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
        os.chmod(script, os.stat(script).st_mode | stat.S_IEXEC)
        builder = (builder.config("spark.worker.resource.gpu.amount", "2")
                   .config("spark.worker.resource.gpu.discoveryScript", script)
                   .config("spark.executor.resource.gpu.amount", "2")
                   .config("spark.task.resource.gpu.amount", gpu_amount))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def probe_udf():
    """The probe, of the embedding UDF's kind (Arrow on pyspark >= 4.1): Spark runs each kind in its own workers."""
    from user_spark.compat import has_arrow_udf

    if has_arrow_udf():
        import pyarrow as pa
        from pyspark.sql.functions import arrow_udf

        return arrow_udf(lambda col: pa.array(probe_value(len(col))), "string")
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    return pandas_udf(lambda col: pd.Series(probe_value(len(col))), "string")


def run(spark, model: str, out: str, name: str, **options) -> dict:
    from user_spark import embed_udf

    probe = probe_udf()
    rows = [(i, t) for i, t in enumerate(texts(ROWS))]
    df = spark.createDataFrame(rows, "id long, text string").repartition(PARTITIONS)
    udf = embed_udf(model, role="query", **options)
    df.select("id", udf("text").alias("embedding"), probe("text").alias("probe")).write.mode("overwrite").parquet(
        os.path.join(out, name))
    return {"metrics": udf.metrics.as_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--overflow-model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    os.environ["SPARK_WORKER_DIR"] = os.path.join(args.out, "spark-work")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    result = {}
    # local[2] first: a later session in this process inherits the first one's settings as JVM properties, and
    # local mode cannot schedule tasks that ask for GPUs.
    spark = session("local[2]", args.out, None, os.path.join(args.out, "registry-unassigned"))
    result["unassigned"] = run(spark, args.model, args.out, "unassigned", precision="fp32")
    result["overflow"] = run(spark, args.overflow_model, args.out, "overflow", precision="fp16")
    spark.stop()
    for name, master, amount in [("one-per-gpu", "local-cluster[1,2,2048]", "1"),
                                 ("half-gpu", "local-cluster[1,4,2048]", "0.5")]:
        spark = session(master, args.out, amount, os.path.join(args.out, f"registry-{name}"))
        result[name] = run(spark, args.model, args.out, name, precision="fp32")
        spark.stop()
    return finish(None, args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
