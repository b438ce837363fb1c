"""Multi-process Spark: separate executor JVMs and Python workers, a shipped model archive, killed workers.

The killed driver followed by a re-run of the incremental enrichment job is in ``tests/test_enrich.py``.

``tests/cluster_job.py`` runs the jobs on ``local-cluster[2,1,2048]`` in a subprocess (a second SparkSession
cannot share this process's JVM) and writes Parquet outputs; these tests read them and compare them with the
same job on the ``local[2]`` test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from user_spark import with_embeddings

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/


@pytest.fixture(scope="module")
def cluster_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "cluster_job.py"), "--model", tiny_model, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "result.json") as fh:
        return out, json.load(fh)


@pytest.fixture(scope="module")
def local_reference(spark, tiny_model):
    """The same job on the local[2] test session: id -> embedding (None for null text)."""
    import cluster_job

    rows = with_embeddings(cluster_job.frame(spark), {"text": "passage"}, model=tiny_model).collect()
    return {r.id: r.text_embedding for r in rows}


def read_run(out, name: str) -> pd.DataFrame:
    return pd.read_parquet(out / name).sort_values("id", kind="stable").reset_index(drop=True)


def assert_same_as_reference(df: pd.DataFrame, reference: dict) -> None:
    # Exactly once: every input row, none twice.
    assert df["id"].tolist() == sorted(reference)
    for row_id, got in zip(df["id"], df["text_embedding"], strict=False):
        want = reference[row_id]
        assert (got is None) == (want is None), row_id
        if want is not None:
            assert np.abs(np.asarray(got) - np.asarray(want)).max() < 1e-6, row_id


def test_cluster_loads_model_once_per_executor_python_worker(cluster_run):
    out, result = cluster_run
    assert result["master"].startswith("local-cluster")
    assert result["location_kind"] == "spark_files"  # the folder travelled as an archive, found by SparkFiles.get
    workers = read_run(out, "clean")["worker"].str.split(":", expand=True).astype(int)
    loads = workers.groupby(0)[1].max()
    assert result["driver_pid"] not in loads.index
    # 8 tasks on two single-core executors: two reused Python workers, each loaded the model exactly once.
    assert len(loads) == 2 and set(loads) == {1}


def test_cluster_output_equals_local_mode(cluster_run, local_reference):
    out, result = cluster_run
    assert result["runs"]["clean"]["failed_tasks"] == 0
    assert_same_as_reference(read_run(out, "clean"), local_reference)


@pytest.mark.parametrize("fault", ["kill-worker", "kill-executor"])
def test_killed_worker_or_executor_is_retried_without_lost_or_duplicated_rows(cluster_run, local_reference, fault):
    out, result = cluster_run
    run = result["runs"][fault]
    assert run["fired"] and "partition=" in run["fired"] and not run["still_armed"]  # the fault really happened
    assert run["failed_tasks"] + run["stage_reattempts"] >= 1  # and Spark retried
    assert_same_as_reference(read_run(out, fault), local_reference)


def test_dedup_with_a_killed_python_worker_equals_an_undisturbed_run(cluster_run):
    out, result = cluster_run
    faulted = result["runs"]["dedup-kill-worker"]
    assert faulted["fired"] and faulted["failed_tasks"] >= 1  # the fault really hit and Spark retried
    assert faulted["summary"] == result["runs"]["dedup-clean"]["summary"]
    for part in ("groups", "kept"):
        clean = pd.read_parquet(out / "dedup-clean" / part)
        again = pd.read_parquet(out / "dedup-kill-worker" / part)
        key = ["id"]
        clean, again = (d.sort_values(key).reset_index(drop=True) for d in (clean, again))
        assert clean["id"].is_unique and again["id"].tolist() == clean["id"].tolist()  # no row lost or doubled
        if part == "groups":
            assert again["group_id"].tolist() == clean["group_id"].tolist()
            assert again["representative_id"].tolist() == clean["representative_id"].tolist()
            np.testing.assert_allclose(again["similarity"], clean["similarity"], atol=1e-6)
