"""Durable intermediates: a join that loses an executor after its embeddings are staged still completes.

``tests/lost_executor_job.py`` runs on ``local-cluster[2,1,1024]`` in a subprocess and SIGKILLs an executor
JVM between staging the embeddings and running the join (see its docstring).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from user_spark import similarity_join

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/


def run_job(model: str, out, checkpoint_dir=None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, os.path.join(HERE, "lost_executor_job.py"), "--model", model, "--out", str(out)]
    if checkpoint_dir:
        cmd += ["--checkpoint-dir", str(checkpoint_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(out / "result.json") as fh:
        return json.load(fh)


def test_join_survives_a_lost_executor_after_staging_and_embeds_each_row_once(spark, tiny_model, tmp_path):
    import cluster_job

    ckpt = tmp_path / "ckpt"
    result = run_job(tiny_model, tmp_path / "out", ckpt)
    assert result["durable"] and result["killed_pid"] and result["executors_before"] == 2
    assert result["staged"] == ["embeddings-query-text"]
    assert result["error"] is None
    assert result["embedded"] == result["rows"]  # every row went through the model once, none twice
    assert result["staged_left"] == []  # the run folder was deleted at the end
    got = pd.read_parquet(tmp_path / "out" / "pairs").sort_values(["id", "rank"]).reset_index(drop=True)
    want = similarity_join(cluster_job.frame(spark, result["rows"], 6), left_id_col="id", left_text_col="text",
                           k=5, model=tiny_model).toPandas().sort_values(["id", "rank"]).reset_index(drop=True)
    assert got[["id", "id_right", "rank"]].equals(want[["id", "id_right", "rank"]])
    assert (got["score"] - want["score"]).abs().max() < 1e-5
