"""Runs user_spark against a Spark Connect server, in its own process, for ``test_connect.py``.

A Connect client cannot share a Python process with the suite's classic session: pyspark picks the classic or
the Connect implementation of ``F.col``, ``pandas_udf`` and the rest process-wide. So this script starts
pyspark's own server (``SparkConnectServer`` on ``local[2]``, its own JVM and Python workers) on a free port and
connects to it as a plain ``sc://`` client, with no JVM here, as a Databricks notebook does; a model folder
given with ``ship="auto"`` is therefore uploaded with ``addArtifacts``. It writes under ``--out``:

- ``jobs/``: what :func:`run_jobs` returns (dedup, cluster, similarity_join, the embed job's ``run``), which
  ``test_connect.py`` also runs on the classic test session and compares;
- ``minilm.parquet``, ``roles.parquet``, ``cli/``: embeddings to compare with sentence-transformers / the encoder;
- ``result.json``: the session's class, metrics, where the model was found, driver-side errors and how many
  plans the client sent the server while raising them.

    python tests/connect_checks.py --inputs DIR --model TINY_DIR --minilm MINILM_DIR --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

# The suite's classic session has the same settings (tests/conftest.py), so jobs can be compared.
SERVER_CONFS = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "8",
    "spark.task.maxFailures": "1",
    "spark.python.worker.reuse": "true",
}


def write_inputs(folder: str, texts: list[str], questions: list[str], paragraphs: list[str]) -> None:
    """The input tables, as Parquet, so both sessions read the same rows (pandas only: no Spark here)."""
    from jobdata import planted_duplicates, unit

    os.makedirs(folder, exist_ok=True)
    n = len(texts)
    kinds = [None if i % 7 == 0 else ("query" if i % 2 else "passage") for i in range(n)]
    pd.DataFrame({
        "id": range(n), "text": [None if i % 5 == 0 else t for i, t in enumerate(texts)],
        "title": [t[:40] for t in texts], "body": texts, "kind": kinds,
    }).to_parquet(os.path.join(folder, "texts.parquet"))
    x = planted_duplicates()
    pd.DataFrame({"id": [i * 7 % 1000 for i in range(len(x))], "emb": list(x)}).to_parquet(
        os.path.join(folder, "planted.parquet"))
    dups = [*texts[:30], texts[0].upper(), texts[1] + "  "]
    pd.DataFrame({"id": range(len(dups)), "text": dups}).to_parquet(os.path.join(folder, "dups.parquet"))
    rng = np.random.default_rng(8)
    centers = unit(rng.standard_normal((4, 16)))
    labels = rng.integers(0, 4, 200)
    blobs = unit(centers[labels] + 0.04 * rng.standard_normal((200, 16))).astype(np.float32)
    pd.DataFrame(
        {"id": range(200), "text": [f"текст {labels[i]}-{i}" for i in range(200)], "emb": list(blobs)}
    ).to_parquet(os.path.join(folder, "blobs.parquet"))
    pd.DataFrame({"qid": range(len(questions)), "question": questions}).to_parquet(os.path.join(folder, "q.parquet"))
    pd.DataFrame({"pid": [f"p{i}" for i in range(len(paragraphs))], "passage": paragraphs}).to_parquet(
        os.path.join(folder, "p.parquet")
    )


def run_jobs(spark: Any, inputs: str, model: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The library's jobs on ``spark`` (classic or Connect): ``(name -> frame, name -> JSON-able facts)``."""
    from user_spark import EmbedOptions, cluster, dedup, similarity_join
    from user_spark.cli.embed import EmbedJobConfig
    from user_spark.cli.embed import run as run_embed_job

    def read(name: str) -> Any:
        return spark.read.parquet(os.path.join(inputs, name))

    frames: dict[str, pd.DataFrame] = {}
    facts: dict[str, Any] = {}
    planted = dedup(read("planted.parquet"), id_col="id", embedding_col="emb", threshold=0.9)
    frames["dedup_vectors"] = planted.groups.toPandas()
    facts["dedup_vectors"] = planted.summary
    texts = dedup(
        read("dups.parquet"), id_col="id", text_col="text", threshold=0.999, model=model, representative="longest_text"
    )
    frames["dedup_text"] = texts.groups.toPandas()
    frames["dedup_text_kept"] = texts.kept.toPandas()
    facts["dedup_text"] = texts.summary
    clusters = cluster(
        read("blobs.parquet"), id_col="id", text_col="text", embedding_col="emb", k=[3, 4], seed=3, top_n=2
    )
    frames["cluster"] = clusters.assignments.toPandas()
    frames["cluster_summary"] = clusters.summary.toPandas()
    facts["cluster"] = {
        "k": clusters.k,
        "silhouettes": {str(k): v for k, v in clusters.silhouettes.items()},
        "centroids": clusters.centroids.tolist(),
    }
    frames["join_text"] = similarity_join(
        read("q.parquet"),
        read("p.parquet"),
        left_id_col="qid",
        right_id_col="pid",
        left_text_col="question",
        right_text_col="passage",
        k=3,
        model=model,
    ).toPandas()
    frames["join_ivf"] = similarity_join(
        read("planted.parquet"),
        left_id_col="id",
        left_embedding_col="emb",
        k=4,
        method="ivf",
        nlist=6,
        nprobe=2,
    ).toPandas()
    job = EmbedJobConfig(
        input=os.path.join(inputs, "texts.parquet"),
        columns=(("text", "passage"), ("title", "query")),
        embed=EmbedOptions(model=model),
        partitions=3,
    )
    frames["embed_job"] = run_embed_job(spark, job).select("id", "text_embedding", "title_embedding").toPandas()
    return frames, facts


def write(frame: pd.DataFrame, path: str) -> None:
    frame.attrs = {}  # Connect's toPandas puts its plan metrics there, which Parquet metadata cannot hold
    frame.to_parquet(path)


def save(out: str, frames: dict[str, pd.DataFrame], facts: dict[str, Any]) -> None:
    os.makedirs(out, exist_ok=True)
    for name, frame in frames.items():
        write(frame, os.path.join(out, f"{name}.parquet"))
    with open(os.path.join(out, "facts.json"), "w") as fh:
        json.dump(facts, fh)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_jar() -> str | None:
    """The Spark Connect server's jar in the installed pyspark, or ``None``: pip's pyspark 4.x ships it, 3.5's does
    not (``--packages org.apache.spark:spark-connect_2.12:3.5.x`` fetches it from Maven, unreachable here)."""
    import glob

    import pyspark

    jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "spark-connect_*.jar"))
    return jars[0] if jars else None


@contextlib.contextmanager
def connect_server(log_path: str, timeout: float = 180.0) -> Iterator[str]:
    """pyspark's Spark Connect server on ``local[2]`` in a child process; yields its ``sc://`` URL."""
    import pyspark

    home = os.path.dirname(pyspark.__file__)
    port = _free_port()
    command = [
        os.path.join(home, "bin", "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        "local[2]",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
    ]
    for key, value in SERVER_CONFS.items():
        command += ["--conf", f"{key}={value}"]
    # The server's Python workers: this interpreter, with this PYTHONPATH (user_spark must import there).
    env = dict(os.environ, SPARK_HOME=home, PYSPARK_PYTHON=sys.executable)
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the Connect server exited with {server.returncode}; see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Connect server did not listen on {port} in {timeout} s; see {log_path}"
                    ) from exc
                time.sleep(0.25)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own process group: the JVM and its Python workers
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _execution_counter() -> Any:
    """A gRPC interceptor counting ExecutePlan calls: every query, command or write the client sends."""
    import grpc

    class Counter(grpc.UnaryStreamClientInterceptor):
        calls = 0

        def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
            if details.method.endswith("/ExecutePlan"):
                Counter.calls += 1
            return continuation(details, request)

    return Counter()


def _raises(action: Callable[[], Any], counter: Any) -> dict[str, Any]:
    before = counter.calls
    try:
        action()
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc), "executions": counter.calls - before}
    return {"error": None, "message": "", "executions": counter.calls - before}


def connect_only(spark: Any, inputs: str, model: str, minilm: str, out: str, counter: Any) -> dict[str, Any]:
    """What only a Connect session shows: shipping, metrics, errors before any plan, the UDF and the CLI."""
    from pyspark.sql import functions as F

    from user_spark import dedup, embed_udf, with_embeddings
    from user_spark.cli import main as cli

    texts = spark.read.parquet(os.path.join(inputs, "texts.parquet"))
    result: dict[str, Any] = {"session": f"{type(spark).__module__}.{type(spark).__name__}"}

    udf = embed_udf(minilm, role="passage", ship="never")
    write(texts.select("id", udf("text").alias("e")).toPandas(), os.path.join(out, "minilm.parquet"))
    result["minilm"] = {"location": udf.config.location.kind, "metrics": udf.metrics.as_dict()}

    roles = with_embeddings(texts, {"title": "query", "body": "passage", "text": F.col("kind")}, model=model)
    never = with_embeddings(
        texts.select("id", "body"),
        {"body": "passage"},
        model=model,
        ship="never",
        output_columns={"body": "body_in_place"},
    )
    both = roles.join(never, "id").select("id", "title_embedding", "body_embedding", "text_embedding", "body_in_place")
    write(both.toPandas(), os.path.join(out, "roles.parquet"))
    from user_spark import EmbedOptions
    from user_spark.embedding.udf import prepare_embedding

    result["locations"] = {
        ship: prepare_embedding(EmbedOptions(model=model, ship=ship), spark=spark).location.kind
        for ship in ("auto", "never")
    }

    df = spark.createDataFrame([(1, "текст", 5)], "id long, text string, n long")
    result["errors"] = {
        "missing": _raises(lambda: with_embeddings(df, {"missing": "query"}, model=model), counter),
        "not_string": _raises(lambda: with_embeddings(df, {"n": "query"}, model=model), counter),
        "role": _raises(lambda: with_embeddings(df, {"text": "document"}, model=model), counter),
        "dedup_id": _raises(lambda: dedup(df, id_col="key", text_col="text", model=model), counter),
        "uri": _raises(lambda: embed_udf("hdfs://namenode:8020/models/USER-base"), counter),
        # the control: a real action is counted, so zero above means no plan was sent
        "action": _raises(lambda: df.collect(), counter),
    }

    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.clustering import KMeans

    from user_spark.ml import UserEmbedder

    docs = spark.read.parquet(os.path.join(inputs, "dups.parquet"))
    stages = [
        UserEmbedder(inputCol="text", outputCol="features", model=model, outputType="vector"),
        KMeans(k=3, seed=7, distanceMeasure="cosine"),
    ]
    fitted = Pipeline(stages=stages).fit(docs)
    fitted.write().save(os.path.join(out, "pipeline"))
    reloaded = PipelineModel.load(os.path.join(out, "pipeline")).transform(docs).select("id", "prediction")
    pairs = (
        fitted.transform(docs).select("id", "prediction").join(reloaded.withColumnRenamed("prediction", "again"), "id")
    )
    result["pipeline"] = {str(r.id): [r.prediction, r.again] for r in pairs.collect()}

    from user_spark import enrich

    target = os.path.join(out, "enriched")
    first = enrich(texts, target, id_col="id", columns={"text": "passage"}, model=model, commit_rows=25)
    again = enrich(texts, target, id_col="id", columns={"text": "passage"}, model=model, commit_rows=25)
    result["enrich"] = {"first": first.rows_embedded, "batches": len(first.batches), "again": again.rows_embedded}

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli(
            [
                "embed",
                "--input",
                os.path.join(inputs, "texts.parquet"),
                "--output",
                os.path.join(out, "cli"),
                "--column",
                "body:passage",
                "--model",
                model,
            ]
        )
    result["cli"] = {"code": code, "printed": printed.getvalue()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--model", required=True, help="the tiny test model folder")
    parser.add_argument("--minilm", required=True, help="all-MiniLM-L6-v2 folder")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    # A terminated run still stops its server (the finally blocks below); Python's default would skip them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with connect_server(os.path.join(args.out, "server.log")) as url:
        timings["server_start"] = time.perf_counter() - start
        from pyspark.sql.connect.client import DefaultChannelBuilder
        from pyspark.sql.connect.session import SparkSession

        channel = DefaultChannelBuilder(url)
        counter = _execution_counter()
        channel.add_interceptor(counter)
        # What SparkSession.builder.remote(url) sets: pyspark.sql.functions etc. then build Connect columns.
        os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
        spark = SparkSession.builder.channelBuilder(channel).getOrCreate()
        try:
            mark = time.perf_counter()
            result = connect_only(spark, args.inputs, args.model, args.minilm, args.out, counter)
            timings["connect_only"] = time.perf_counter() - mark
            mark = time.perf_counter()
            save(os.path.join(args.out, "jobs"), *run_jobs(spark, args.inputs, args.model))
            timings["jobs"] = time.perf_counter() - mark
        finally:
            spark.stop()
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    with open(os.path.join(args.out, "result.json"), "w") as fh:
        json.dump(result, fh, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def needs_connect_server() -> object:
    """pytest's skip marker for tests that start a Spark Connect server (pyspark 3.5's pip package has none)."""
    import pytest

    return pytest.mark.skipif(
        server_jar() is None, reason="this pyspark's pip package has no Spark Connect server (3.5's comes from Maven)"
    )
