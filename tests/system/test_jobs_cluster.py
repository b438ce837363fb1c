"""The three jobs on a multi-process Spark (two executor JVMs): what spark-submit on a cluster exercises."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_jobs(tmp_path, master: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 12)).astype(np.float32)
    x[1] = x[0] + 0.01
    pd.DataFrame({"id": range(120), "text": [f"t{i}" for i in range(120)], "emb": list(x)}).to_parquet(
        tmp_path / "in.parquet"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["SPARK_WORKER_DIR"] = str(tmp_path / "work")
    code = (
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "from user_spark.cli import main\n"
        "# one cluster for the three jobs: main() uses the active session and leaves it running\n"
        f"spark = (SparkSession.builder.master({master!r}).config('spark.ui.enabled', 'false')"
        ".config('spark.driver.host', '127.0.0.1').config('spark.sql.shuffle.partitions', '4').getOrCreate())\n"
        "common = []\n"
        f"src, out = {str(tmp_path / 'in.parquet')!r}, {str(tmp_path)!r}\n"
        "rc = main(['dedup', '--input', src, '--output', out + '/d', '--id-col', 'id', '--embedding-col', 'emb',"
        " '--text-col', 'text'] + common)\n"
        "rc += main(['cluster', '--input', src, '--output', out + '/c', '--id-col', 'id', '--embedding-col', 'emb',"
        " '--k', '3', '--no-plot'] + common)\n"
        "rc += main(['join', '--left', src, '--output', out + '/j', '--left-id-col', 'id', '--left-embedding-col',"
        " 'emb', '--k', '2', '--method', 'ivf'] + common)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "groups": pd.read_parquet(tmp_path / "d" / "groups").sort_values("id").reset_index(drop=True),
        "kept": pd.read_parquet(tmp_path / "d" / "kept").drop(columns=["emb"]).sort_values("id").reset_index(drop=True),
        "assignments": pd.read_parquet(tmp_path / "c" / "assignments").sort_values("id").reset_index(drop=True),
        "pairs": pd.read_parquet(tmp_path / "j").sort_values(["id", "rank"]).reset_index(drop=True),
    }


@pytest.mark.cluster
@pytest.mark.slow
def test_dedup_cluster_join_on_local_cluster_equal_local_1(tmp_path):
    cluster = _run_jobs(tmp_path / "cluster", "local-cluster[2,1,1024]")
    groups = cluster["groups"]
    assert sorted(groups["id"]) == [0, 1] and len(cluster["kept"]) == 119
    assert len(cluster["assignments"]) == 120
    pairs = cluster["pairs"]
    assert len(pairs) == 240 and pairs[(pairs["id"] == 0) & (pairs["rank"] == 1)]["id_right"].item() == 1
    # Deterministic: one thread in one process gives the same answers as two executor JVMs.
    single = _run_jobs(tmp_path / "single", "local[1]")
    for name in ("groups", "kept", "assignments"):
        pd.testing.assert_frame_equal(
            single[name].drop(columns=["similarity"], errors="ignore"),
            cluster[name].drop(columns=["similarity"], errors="ignore"),
            check_dtype=False,
        )
        if "similarity" in cluster[name]:
            np.testing.assert_allclose(single[name]["similarity"], cluster[name]["similarity"], atol=1e-6)
    pd.testing.assert_frame_equal(single["pairs"][["id", "id_right", "rank"]], pairs[["id", "id_right", "rank"]])
    np.testing.assert_allclose(single["pairs"]["score"], pairs["score"], atol=1e-6)
