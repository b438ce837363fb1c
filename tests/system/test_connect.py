"""Spark Connect: the UDF, ``with_embeddings``, the jobs and the CLI against a Connect server.

``tests/connect_checks.py`` starts pyspark's Connect server and runs everything as an ``sc://`` client in a
subprocess (a Connect client cannot share this process with the suite's classic session); these tests read
what it wrote and compare it with sentence-transformers, the encoder, and the same jobs on the classic session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import connect_checks
import numpy as np
import pandas as pd
import pytest
from conftest import sentence_transformers_reference, xquad_sample

pytestmark = [
    pytest.mark.slow,
    pytest.mark.connect,
    connect_checks.needs_connect_server(),
]

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
TOL = 1e-5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ru_texts):
    folder = str(tmp_path_factory.mktemp("connect-inputs"))
    paragraphs, questions = xquad_sample()
    connect_checks.write_inputs(folder, ru_texts, [q for q, _ in questions[:8]], paragraphs)
    return folder


@pytest.fixture(scope="module")
def runs(spark, inputs, tiny_model, minilm_model, tmp_path_factory):
    """``(out folder, result.json, classic frames, classic facts)``: the Connect client runs in a subprocess
    while the same jobs run here on the classic session."""
    out = tmp_path_factory.mktemp("connect-out")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYSPARK_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE), os.environ.get("PYTHONPATH")])))
    env = {k: v for k, v in env.items() if not k.startswith(("PYSPARK_GATEWAY", "SPARK_CONNECT", "SPARK_REMOTE"))}
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "connect_checks.py"), "--inputs", inputs, "--model", tiny_model,
         "--minilm", minilm_model, "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        frames, facts = connect_checks.run_jobs(spark, inputs, tiny_model)
        output, _ = proc.communicate(timeout=540)
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the script stops its Connect server on the way out
            proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-4000:]
    with open(out / "result.json", encoding="utf-8") as fh:
        return out, json.load(fh), frames, facts


@pytest.fixture(scope="module")
def connect_run(runs):
    return runs[0], runs[1]


@pytest.fixture(scope="module")
def classic_jobs(runs):
    return runs[2], runs[3]


def encoder_reference(model: str, texts: list, prefixes):
    from user_spark.model.spec import read_model_spec
    from user_spark.runtime.device import choose_device
    from user_spark.runtime.encoder import Encoder

    out = Encoder(read_model_spec(model), model, choose_device()).embed(texts, prefixes)
    return [v if ok else None for v, ok in zip(out.vectors, out.valid, strict=False)]


def assert_vectors(got, want, tol: float = TOL) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert (g is None) == (w is None), i
        if w is not None:
            assert np.abs(np.asarray(g, dtype=np.float32) - np.asarray(w, dtype=np.float32)).max() < tol, i


def test_the_session_is_a_connect_client_and_metrics_are_none(connect_run):
    _, result = connect_run
    assert result["session"] == "pyspark.sql.connect.session.SparkSession"
    assert result["minilm"]["metrics"] == {"rows": None, "nulls": None, "tokens": None, "truncated": None,
                                           "recomputed": None}


def test_udf_over_connect_equals_sentence_transformers_and_keeps_rows(connect_run, inputs, minilm_model):
    out, _ = connect_run
    source = pd.read_parquet(os.path.join(inputs, "texts.parquet"))
    got = pd.read_parquet(out / "minilm.parquet").sort_values("id")
    assert got["id"].tolist() == source["id"].tolist()  # every row once
    valid = source["text"].notna()
    assert valid.sum() < len(source) and got["e"].isna().tolist() == (~valid).tolist()  # null in, null out
    ref = sentence_transformers_reference(minilm_model, source["text"][valid].tolist(), "passage: ")
    assert np.abs(np.stack(got["e"][valid.to_numpy()].to_numpy()) - ref).max() < TOL


def test_roles_over_connect_with_the_model_shipped_as_an_artifact(connect_run, inputs, tiny_model):
    out, result = connect_run
    # sc:// server: ship="auto" uploads the folder (addArtifacts) and executors find it with SparkFiles.get
    assert result["locations"] == {"auto": "spark_files", "never": "path"}
    source = pd.read_parquet(os.path.join(inputs, "texts.parquet"))
    got = pd.read_parquet(out / "roles.parquet").sort_values("id")
    assert got["id"].tolist() == source["id"].tolist()
    titles = source["title"].tolist()
    bodies = source["body"].tolist()
    assert_vectors(got["title_embedding"].tolist(), encoder_reference(tiny_model, titles, "query: "))
    assert_vectors(got["body_embedding"].tolist(), encoder_reference(tiny_model, bodies, "passage: "))
    # a role column: each row's own prefix, null role -> the default (query)
    prefixes = [f"{k}: " if k else "query: " for k in source["kind"]]
    assert_vectors(got["text_embedding"].tolist(), encoder_reference(tiny_model, source["text"].tolist(), prefixes))
    assert_vectors(got["body_in_place"].tolist(), got["body_embedding"].tolist(), tol=1e-6)  # same model, two routes


def test_incremental_enrichment_over_connect(connect_run, inputs, tiny_model):
    out, result = connect_run
    source = pd.read_parquet(os.path.join(inputs, "texts.parquet"))
    assert result["enrich"] == {"first": len(source), "batches": -(-len(source) // 25), "again": 0}
    got = pd.read_parquet(out / "enriched").sort_values("id")
    assert got["id"].tolist() == source["id"].tolist()  # every row once
    assert_vectors(got["text_embedding"].tolist(), encoder_reference(tiny_model, source["text"].tolist(), "passage: "))


def test_bad_input_fails_before_the_client_sends_any_plan(connect_run):
    _, result = connect_run
    errors = result["errors"]
    assert errors["action"]["executions"] >= 1  # the counter sees real work
    expected = {
        "missing": ("ColumnError", "Column 'missing' not found; available: ['id', 'text', 'n']"),
        "not_string": ("ColumnError", "Column 'n' is bigint, but the text column must be a string; cast it first"),
        "role": ("RoleError", "Unknown role 'document'; valid roles for this model: ['passage', 'query']"),
        "dedup_id": ("ColumnError", "Id column 'key' not found; available: ['id', 'text', 'n']"),
        "uri": ("ModelSourceError", "Over Spark Connect user_spark cannot have 'hdfs://namenode:8020/models/USER-base' "
                "copied to the executors"),
    }
    for name, (cls, start) in expected.items():
        assert errors[name]["error"] == cls, (name, errors[name])
        assert errors[name]["message"].startswith(start), (name, errors[name]["message"])
        assert errors[name]["executions"] == 0, name


def test_a_user_embedder_pipeline_saves_and_reloads_over_connect(connect_run, inputs):
    _, result = connect_run
    ids = pd.read_parquet(os.path.join(inputs, "dups.parquet"))["id"]
    pairs = result["pipeline"]
    assert sorted(int(i) for i in pairs) == sorted(ids)
    assert all(first == again for first, again in pairs.values())
    assert len({first for first, _ in pairs.values()}) == 3  # k=3 clusters used


def test_embed_cli_over_connect(connect_run, inputs, tiny_model):
    out, result = connect_run
    assert result["cli"]["code"] == 0
    assert "(Spark Connect gives no counts)" in result["cli"]["printed"]
    source = pd.read_parquet(os.path.join(inputs, "texts.parquet"))
    written = pd.read_parquet(out / "cli").sort_values("id")
    assert list(written.columns) == [*source.columns, "body_embedding"] and len(written) == len(source)
    expected = encoder_reference(tiny_model, source["body"].tolist(), "passage: ")
    assert_vectors(written["body_embedding"].tolist(), expected)


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize(
    ("name", "keys", "floats"),
    [
        ("dedup_vectors", ["id"], ["similarity"]),
        ("dedup_text", ["id"], ["similarity"]),
        ("dedup_text_kept", ["id"], []),
        ("cluster", ["id"], ["similarity"]),
        ("cluster_summary", ["cluster_id"], ["mean_similarity"]),
        ("join_text", ["qid", "rank"], ["score"]),
        ("join_ivf", ["id", "rank"], ["score"]),
    ],
)
def test_jobs_over_connect_equal_classic_spark(connect_run, classic_jobs, name, keys, floats):
    out, _ = connect_run
    frames, _ = classic_jobs
    got = _sorted(pd.read_parquet(out / "jobs" / f"{name}.parquet"), keys)
    want = _sorted(frames[name], keys)
    assert len(want) > 0 and list(got.columns) == list(want.columns)
    exact = [c for c in want.columns if c not in floats]
    pd.testing.assert_frame_equal(got[exact], want[exact], check_dtype=False)
    for column in floats:
        np.testing.assert_allclose(got[column], want[column], atol=1e-5)


def test_job_facts_and_the_embed_job_over_connect_equal_classic_spark(connect_run, classic_jobs):
    out, _ = connect_run
    frames, facts = classic_jobs
    with open(out / "jobs" / "facts.json", encoding="utf-8") as fh:
        got = json.load(fh)
    assert got["dedup_vectors"] == facts["dedup_vectors"] and got["dedup_vectors"]["near_duplicates"] > 0
    assert got["dedup_text"] == facts["dedup_text"] and got["dedup_text"]["exact_duplicates"] == 2
    assert got["cluster"]["k"] == facts["cluster"]["k"] == 4
    assert got["cluster"]["silhouettes"] == pytest.approx(facts["cluster"]["silhouettes"], abs=1e-6)
    np.testing.assert_allclose(got["cluster"]["centroids"], facts["cluster"]["centroids"], atol=1e-6)
    embedded = _sorted(pd.read_parquet(out / "jobs" / "embed_job.parquet"), ["id"])
    want = _sorted(frames["embed_job"], ["id"])
    assert embedded["id"].tolist() == want["id"].tolist()
    for column in ("text_embedding", "title_embedding"):
        assert_vectors(embedded[column].tolist(), want[column].tolist())
