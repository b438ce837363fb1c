"""Scripts that use a job over Spark Connect exit (they hung at interpreter shutdown, issue 16 item 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import connect_checks
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.connect,
    connect_checks.needs_connect_server(),
]

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/


@pytest.fixture(scope="module")
def server(tmp_path_factory, ru_texts):
    import connect_checks
    from conftest import xquad_sample

    inputs = str(tmp_path_factory.mktemp("connect-exit-inputs"))
    paragraphs, questions = xquad_sample()
    connect_checks.write_inputs(inputs, ru_texts, [q for q, _ in questions[:8]], paragraphs)
    with connect_checks.connect_server(str(tmp_path_factory.mktemp("connect-exit") / "server.log")) as url:
        yield url, inputs


@pytest.mark.parametrize("job", ["checkpoint", "dedup", "cluster", "join"])
def test_a_connect_script_using_a_job_exits(server, tiny_model, job):
    url, inputs = server
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(HERE), os.environ.get("PYTHONPATH")])))
    env = {k: v for k, v in env.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONNECT", "SPARK_REMOTE"))}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "connect_exit_script.py"), "--url", url, "--inputs", inputs,
         "--model", tiny_model, "--job", job],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"checkpoint": "rows 10", "dedup": "rows kept", "cluster": "assigned 200", "join": "pairs 16"}[job] in (
        proc.stdout), proc.stdout
    assert time.monotonic() - start < 200
