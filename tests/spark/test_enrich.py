"""Incremental enrichment: only missing rows are embedded, re-runs are idempotent, a killed driver resumes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import prose_sentences

from user_spark import (
    ColumnError,
    EmbedMetrics,
    OptionError,
    OutputBusyError,
    compact_embeddings,
    current_embeddings,
    enrich,
    with_embeddings,
)
from user_spark.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = prose_sentences(80)


def frame(spark, ids, texts=None):
    texts = texts or {}
    rows = [(i, texts.get(i, TEXTS[i])) for i in ids]
    return spark.createDataFrame(rows, "id long, text string").repartition(3)


def read(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(["id", "batch"]).reset_index(drop=True)


def run(spark, df, out, model, **kw):
    metrics = EmbedMetrics.create(spark)
    res = enrich(df, str(out), id_col="id", columns={"text": "passage"}, model=model, metrics=metrics, **kw)
    return res, metrics.as_dict()["rows"]


def reference(spark, df, model):
    rows = with_embeddings(df, {"text": "passage"}, model=model).collect()
    return {r.id: np.array(r.text_embedding) for r in rows}


def test_rerun_embeds_nothing_and_appended_rows_exactly_once(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    first, rows = run(spark, frame(spark, range(30)), out, tiny_model, commit_rows=8)
    assert (first.rows_embedded, rows, len(first.batches)) == (30, 30, 4)
    sizes = read(out).groupby("batch", observed=True).size()
    assert sorted(sizes.tolist()) == [6, 8, 8, 8]  # exact batches: full ones and the rest, none empty

    again, rows = run(spark, frame(spark, range(30)), out, tiny_model, commit_rows=8)
    assert (again.rows_embedded, rows, again.batches) == (0, 0, ())

    grown = frame(spark, range(42))
    third, rows = run(spark, grown, out, tiny_model, commit_rows=8)
    assert (third.rows_embedded, rows) == (12, 12)

    got = read(out)
    assert got["id"].tolist() == list(range(42))  # every row once, none twice
    assert got["batch"].nunique() == len(first.batches) + len(third.batches)
    want = reference(spark, grown, tiny_model)
    assert (
        max(np.abs(np.array(v) - want[i]).max() for i, v in zip(got["id"], got["text_embedding"], strict=False)) < 1e-5
    )


def test_changed_text_is_embedded_again_and_current_embeddings_follows_the_input(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    run(spark, frame(spark, range(10)), out, tiny_model)
    changed = frame(spark, range(10), texts={4: TEXTS[50], 7: None})
    res, rows = run(spark, changed, out, tiny_model)
    assert (res.rows_embedded, rows) == (2, 2)

    stored = spark.read.parquet(str(out))
    assert stored.count() == 12  # the two old versions stay: Parquet files are never rewritten
    now = current_embeddings(stored, changed, id_col="id", columns=["text"]).toPandas().sort_values("id")
    assert now["id"].tolist() == list(range(10))
    want = reference(spark, changed, tiny_model)
    assert np.abs(np.array(now.set_index("id")["text_embedding"][4]) - want[4]).max() < 1e-5
    assert now.set_index("id")["text_embedding"][7] is None

    # Changing it back finds the first version again: nothing to embed.
    res, _ = run(spark, frame(spark, range(10)), out, tiny_model)
    assert res.rows_embedded == 0


def test_output_records_model_revision_role_dimension_and_precision(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    res, _ = run(spark, frame(spark, range(6)), out, tiny_model)
    meta = spark.read.parquet(str(out)).schema["text_embedding"].metadata["user_spark"]
    assert meta["role"] == "passage" and meta["prompt"] == "passage: " and meta["dimension"] == 64
    assert meta["revision"] == res.model_revision and res.model_revision.startswith("sha256:")
    assert meta["model"] == tiny_model and meta["storage"] == "float32" and meta["normalized"] is True
    assert (meta["precision"], meta["device"]) == res.precision == ("float32", "cpu")


def test_a_run_in_another_precision_is_refused_before_embedding(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    run(spark, frame(spark, range(6)), out, tiny_model, precision="fp32")
    metrics = EmbedMetrics.create(spark)
    refused = r"precision: 'float32' in the output, 'int8' now.*embedded in float32 on cpu"
    with pytest.raises(OptionError, match=refused):
        enrich(frame(spark, range(9)), str(out), id_col="id", columns={"text": "passage"}, model=tiny_model,
               precision="int8", metrics=metrics)
    assert metrics.as_dict()["rows"] == 0
    res, rows = run(spark, frame(spark, range(9)), out, tiny_model, precision="auto")  # auto is fp32 on CPU
    assert (res.rows_embedded, rows) == (3, 3)


def test_a_second_run_on_the_same_output_refuses_while_the_first_holds_its_claim(spark, tiny_model, tmp_path):
    import json
    import socket

    from user_spark.pipelines.claims import CLAIMS_FOLDER

    out = tmp_path / "emb"
    run(spark, frame(spark, range(4)), out, tiny_model)
    claims = out / CLAIMS_FOLDER
    assert not claims.exists() or not list(claims.iterdir())  # a finished run leaves no claim
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (claims / "20261201T000000Z-other.json").parent.mkdir(exist_ok=True)
        (claims / "20261201T000000Z-other.json").write_text(
            json.dumps({"run": "other", "host": socket.gethostname(), "pid": live.pid}))
        with pytest.raises(OutputBusyError, match=r"Another run is writing to .*20261201T000000Z-other\.json"):
            run(spark, frame(spark, range(8)), out, tiny_model)
        assert [p.name for p in claims.iterdir()] == ["20261201T000000Z-other.json"]  # it took its own claim back
    finally:
        live.kill()
        live.wait()
    # the other process is gone: its claim is stale, and the next run goes ahead
    res, rows = run(spark, frame(spark, range(8)), out, tiny_model)
    assert (res.rows_embedded, rows) == (4, 4) and not list(claims.iterdir())


def test_two_runs_at_once_one_embeds_and_the_other_refuses(spark, tiny_model, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "emb"
    run(spark, frame(spark, range(2)), out, tiny_model)  # the model loaded, the output started

    def attempt(_):
        try:
            return run(spark, frame(spark, range(40)), out, tiny_model, commit_rows=5)[0].rows_embedded
        except OutputBusyError:
            return "busy"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(attempt, range(2)))
    # never both (each claims before it looks for the other); both refuse only if they start together
    assert outcomes.count(38) <= 1 and "busy" in outcomes and set(outcomes) <= {38, "busy"}
    got = read(out)
    assert got["id"].is_unique and len(got) == (40 if 38 in outcomes else 2)


def test_compaction_keeps_the_current_version_of_each_id(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    run(spark, frame(spark, range(10)), out, tiny_model, commit_rows=4)
    run(spark, frame(spark, range(10), texts={3: TEXTS[60], 5: TEXTS[61]}), out, tiny_model)
    # id 3 changes back to its first text (embedded in the first run, not the latest batch)
    now = frame(spark, range(10), texts={5: TEXTS[61]})
    assert run(spark, now, out, tiny_model)[0].rows_embedded == 0
    assert spark.read.parquet(str(out)).count() == 12
    res = compact_embeddings(now, str(out), id_col="id", columns=["text"])
    assert (res.rows_before, res.rows_after, res.batches_replaced) == (12, 10, 4)
    got = read(out)
    assert got["id"].tolist() == list(range(10)) and got["batch"].nunique() == 1
    want = reference(spark, now, tiny_model)
    pairs = zip(got["id"], got["text_embedding"], strict=True)
    assert max(np.abs(np.array(v) - want[i]).max() for i, v in pairs) < 1e-5
    meta = spark.read.parquet(str(out)).schema["text_embedding"].metadata["user_spark"]
    assert meta["role"] == "passage" and meta["precision"] == "float32"
    assert run(spark, now, out, tiny_model)[0].rows_embedded == 0  # nothing lost


def test_the_staged_backlog_is_deleted_at_the_end(spark, tiny_model, tmp_path):
    out, staged = tmp_path / "emb", tmp_path / "staging"
    run(spark, frame(spark, range(12)), out, tiny_model, commit_rows=5, checkpoint_dir=str(staged))
    assert staged.exists() and not list(staged.iterdir())


def test_float16_storage_halves_the_bytes(spark, tiny_model, tmp_path):
    from user_spark import decode_float16

    out = tmp_path / "emb16"
    run(spark, frame(spark, range(12)), out, tiny_model, storage="float16")
    stored = spark.read.parquet(str(out))
    assert stored.schema["text_embedding"].dataType.simpleString() == "binary"
    raw = stored.orderBy("id").toPandas()
    assert {len(b) for b in raw["text_embedding"]} == {64 * 2}
    decoded = np.stack(stored.orderBy("id").select(decode_float16("text_embedding")).toPandas()["text_embedding"])
    want = reference(spark, frame(spark, range(12)), tiny_model)
    assert np.abs(decoded - np.stack([want[i] for i in range(12)])).max() < 1e-3
    # The same output cannot switch storage half-way.
    with pytest.raises(OptionError, match="storage: 'float16' in the output, 'float32' now"):
        run(spark, frame(spark, range(14)), out, tiny_model)


def test_bad_input_and_mismatched_outputs_fail_before_embedding(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    run(spark, frame(spark, range(5)), out, tiny_model)
    with pytest.raises(OptionError, match="role: 'passage' in the output, 'query' now"):
        enrich(frame(spark, range(8)), str(out), id_col="id", columns={"text": "query"}, model=tiny_model)
    with pytest.raises(ColumnError, match="holds embedding columns"):
        enrich(
            frame(spark, range(8)), str(out), id_col="id", columns={"text": "passage"}, model=tiny_model, suffix="_vec"
        )
    clashing = spark.createDataFrame([(1, "а"), (1, "б"), (2, "в")], "id long, text string")
    with pytest.raises(ColumnError, match=r"Ids \[1\] appear with different texts"):
        enrich(clashing, str(tmp_path / "other"), id_col="id", columns={"text": "query"}, model=tiny_model)
    nulls = spark.createDataFrame([(None, "а"), (2, "в")], "id long, text string")
    with pytest.raises(ColumnError, match="null values"):
        enrich(nulls, str(tmp_path / "other"), id_col="id", columns={"text": "query"}, model=tiny_model)
    with pytest.raises(ColumnError, match="Column 'body' not found"):
        enrich(frame(spark, range(3)), str(out), id_col="id", columns={"body": "passage"}, model=tiny_model)
    plain = tmp_path / "plain"
    frame(spark, range(3)).write.parquet(str(plain))
    with pytest.raises(ColumnError, match="is not an enrichment output"):
        enrich(frame(spark, range(3)), str(plain), id_col="id", columns={"text": "passage"}, model=tiny_model)
    assert not (tmp_path / "other").exists()
    # Exact duplicate rows are one row, not an error.
    twice = spark.createDataFrame([(1, "а"), (1, "а"), (2, "в")], "id long, text string")
    res = enrich(twice, str(tmp_path / "dups"), id_col="id", columns={"text": "query"}, model=tiny_model)
    assert res.rows_embedded == 2 and spark.read.parquet(str(tmp_path / "dups")).count() == 2


def test_id_with_a_new_text_appended_to_an_append_only_source_is_refused(spark, tiny_model, tmp_path):
    out = tmp_path / "emb"
    run(spark, frame(spark, range(5)), out, tiny_model)
    appended = frame(spark, range(5)).union(spark.createDataFrame([(2, "новый текст")], "id long, text string"))
    with pytest.raises(ColumnError, match=r"Ids \[2\] appear with different texts"):
        run(spark, appended, out, tiny_model)


def test_content_hash_ignores_column_order_and_cannot_be_fooled_by_separators(spark):
    from user_spark.pipelines.enrich import content_hash

    df = spark.createDataFrame(
        [("a\u001fsb", None), ("a", "b\u001fn"), ("a,b", ""), ("a", ",b"), ("", None), (None, "")], "x string, y string"
    )
    hashes = [r[0] for r in df.select(content_hash(["x", "y"])).collect()]
    assert len(set(hashes)) == len(hashes)
    assert hashes == [r[0] for r in df.select(content_hash(["y", "x"])).collect()]


def test_other_options_pass_through_and_unsupported_formats_are_refused(spark, tiny_model, tmp_path):
    res, rows = run(spark, frame(spark, range(4)), tmp_path / "emb", tiny_model, udf_type="pandas", batch_tokens=64)
    assert res.rows_embedded == rows == 4
    with pytest.raises(OptionError, match="output_format must be one of"):
        run(spark, frame(spark, range(4)), tmp_path / "json", tiny_model, output_format="json")
    with pytest.raises(OptionError, match="role from columns"):
        run(spark, frame(spark, range(4)), tmp_path / "r", tiny_model, role="query")


def test_cli_ends_with_a_summary_line(spark, tiny_model, tmp_path, capsys):
    src = tmp_path / "docs.parquet"
    pd.DataFrame({"id": range(9), "body": TEXTS[:9]}).to_parquet(src)
    args = [
        "enrich",
        "--input",
        str(src),
        "--output",
        str(tmp_path / "out"),
        "--id-col",
        "id",
        "--column",
        "body:passage",
        "--model",
        tiny_model,
        "--commit-rows",
        "5",
    ]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert "user-spark enrich: 9 new rows embedded (1 column(s)) in 2 batch(es)" in line and "truncated" in line
    assert main(args) == 0
    assert "user-spark enrich: 0 new rows embedded" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_driver_then_rerun_resumes_without_redoing_committed_batches(spark, tiny_model, tmp_path):
    """The driver JVM is SIGKILLed in the middle of writing batch 2; the re-run embeds only what was not committed."""
    src = tmp_path / "docs.parquet"
    pd.DataFrame({"id": range(40), "text": TEXTS[:40]}).to_parquet(src)
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "arm-after-commit").write_text("1")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "user_spark",
        "enrich",
        "--input",
        str(src),
        "--output",
        str(out),
        "--id-col",
        "id",
        "--column",
        "text:passage",
        "--model",
        tiny_model,
        "--commit-rows",
        "10",
        "--master",
        "local[2]",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.host=127.0.0.1",
    ]

    crashed = subprocess.run(
        cmd, env=dict(env, USER_SPARK_TEST_FAULT=str(faults)), capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode != 0 and (faults / "kill-executor.fired").exists(), crashed.stderr[-3000:]
    # a first run into a new output looks before it reads: no FileNotFoundException stack in the log
    assert "FileNotFoundException" not in crashed.stderr and "PATH_NOT_FOUND" not in crashed.stderr
    committed = read(out)
    assert committed["batch"].nunique() == 1 and 0 < len(committed) < 40
    assert any((out / d / "_temporary").exists() for d in os.listdir(out))  # the batch in flight left only this

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"user-spark enrich: {40 - len(committed)} new rows embedded" in resumed.stdout
    final = read(out)
    assert final["id"].tolist() == list(range(40))
    # the resumed run's batches are exact: full ones of --commit-rows and the rest, none empty
    resumed_sizes = final[~final["batch"].isin(committed["batch"])].groupby("batch", observed=True).size().tolist()
    left = 40 - len(committed)
    assert sorted(resumed_sizes) == sorted([10] * (left // 10) + ([left % 10] if left % 10 else []))
    # The same vectors as an undisturbed embedding of the same rows.
    want = reference(spark, frame(spark, range(40)), tiny_model)
    assert (
        max(np.abs(np.array(v) - want[i]).max() for i, v in zip(final["id"], final["text_embedding"], strict=False))
        < 1e-5
    )
