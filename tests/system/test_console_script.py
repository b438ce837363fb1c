"""The installed user-spark console script on its own local Spark."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from embedjob import check_output, job_docs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def docs(ru_texts):
    return job_docs(ru_texts)


@pytest.mark.slow
def test_console_script_on_its_own_local_spark(tiny_model, docs, tmp_path):
    """A fresh process with no session: the default local master, as on a laptop."""
    src = tmp_path / "docs.parquet"
    docs.to_parquet(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    cmd = [sys.executable, os.path.join(ROOT, "jobs", "embed.py"), "--input", str(src), "--output",
           str(tmp_path / "out"), "--column", "body:passage", "--column", "title:query", "--model", tiny_model,
           "--master", "local[2]", "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "user-spark embed:" in done.stdout
    check_output(tmp_path / "out", docs, tiny_model)
    version = subprocess.run([sys.executable, "-m", "user_spark", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("user-spark ")
