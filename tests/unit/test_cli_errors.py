"""The CLI as a newcomer meets it: mistakes fail in seconds with one ``error:`` line and exit code 2, before
Spark starts (no JVM, no Java stack, no Python traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from user_spark import OptionError
from user_spark.cli import main
from user_spark.cli import session as cli_session


@pytest.fixture
def no_spark(monkeypatch):
    """Fail the test if a job gets as far as starting (or reusing) a Spark session."""

    def refuse(*args, **kwargs):
        raise AssertionError("the job started Spark before reporting the error")

    monkeypatch.setattr(cli_session, "build_session", refuse)


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "docs.parquet"
    pd.DataFrame({"id": [1, 2], "body": ["Первый текст.", "Второй текст."]}).to_parquet(path)
    return str(path)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("job", ["embed", "dedup", "cluster", "join", "enrich"])
def test_missing_input_is_reported_before_spark(job, tmp_path, no_spark, capsys):
    missing = str(tmp_path / "nope.parquet")
    argv = {
        "embed": ["--input", missing, "--column", "body"],
        "dedup": ["--input", missing, "--id-col", "id", "--text-col", "body"],
        "cluster": ["--input", missing, "--id-col", "id", "--text-col", "body"],
        "join": ["--left", missing, "--left-id-col", "id", "--left-text-col", "body"],
        "enrich": ["--input", missing, "--id-col", "id", "--column", "body"],
    }[job]
    assert main([job, *argv, "--output", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys) == f"error: Input {missing!r} does not exist"


def test_existing_output_is_reported_before_spark(docs, tmp_path, no_spark, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["embed", "--input", docs, "--output", str(out), "--column", "body"]) == 2
    assert "already exists; choose another --output, or pass --mode overwrite" in one_error_line(capsys)
    (tmp_path / "dd" / "kept").mkdir(parents=True)
    dedup = ["dedup", "--input", docs, "--output", str(tmp_path / "dd"), "--id-col", "id", "--text-col", "body"]
    assert main(dedup) == 2
    assert f"Output {str(tmp_path / 'dd' / 'kept')!r} already exists" in one_error_line(capsys)


def test_flag_mistakes_are_reported_before_spark(docs, tiny_model, tmp_path, no_spark, capsys):
    out = str(tmp_path / "out")
    base = ["embed", "--input", docs, "--output", out, "--model", tiny_model]
    assert main([*base, "--column", "body:summary"]) == 2
    assert "Unknown role 'summary'; valid roles for this model: ['passage', 'query']" in one_error_line(capsys)
    assert main([*base, "--column", "body:"]) == 2
    assert "--column expects NAME or NAME:ROLE (e.g. body:passage), got 'body:'" in one_error_line(capsys)
    assert main([*base, "--column", "body", "--column", "body:passage"]) == 2
    assert "--column names a column twice" in one_error_line(capsys)
    with pytest.raises(SystemExit) as exc:  # argparse's own errors: usage, then one error line, exit 2
        main([*base, "--column", "body", "--precision", "fp8"])
    assert exc.value.code == 2
    assert "argument --precision: invalid choice: 'fp8'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--column", "body", "--batch-tokens", "0"])
    assert "argument --batch-tokens: must be >= 1, got 0" in capsys.readouterr().err


def test_a_local_model_path_that_does_not_exist_says_no_such_folder(docs, tmp_path, no_spark, capsys, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)  # "models/USER-base" next to an existing "models" folder is a path, not a hub id
    code = main(["embed", "--input", docs, "--output", "out", "--column", "body", "--model", "models/USER-base"])
    assert code == 2
    assert one_error_line(capsys).startswith(f"error: No such folder: {tmp_path / 'models' / 'USER-base'}, and ")


def test_from_a_shell_a_mistake_is_one_line_in_seconds(docs, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    for argv in (
        ["embed", "--input", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "o"), "--column", "body"],
        ["embed", "--input", docs, "--output", str(tmp_path), "--column", "body"],
    ):
        start = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "user_spark", *argv], capture_output=True, text=True, env=env)
        assert run.returncode == 2
        assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error: "), run.stderr
        assert "Traceback" not in run.stderr and "at org.apache" not in run.stderr
        assert time.monotonic() - start < 20


@pytest.mark.parametrize(
    ("path", "flags"),
    [
        ("dbfs:/lake/docs", {}),  # another filesystem: Spark resolves it
        ("hdfs:///lake/docs", {}),
        ("/lake/docs", {"master": "yarn"}),  # a cluster resolves scheme-less paths against fs.defaultFS
        ("/lake/docs", {"remote": "sc://spark-connect:15002"}),  # the server's paths, not this client's
        ("catalog.db.docs", {"input_format": "iceberg"}),  # a table id of another Spark source
    ],
)
def test_paths_that_are_not_this_machines_are_left_to_spark(path, flags, monkeypatch):
    import argparse

    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    monkeypatch.setattr("pyspark.sql.SparkSession.getActiveSession", staticmethod(lambda: None))
    args = argparse.Namespace(**{"master": None, "remote": None, "input_format": "auto", "mode": "errorifexists",
                                 **flags})
    cli_session.preflight(args, [path], ["/lake/out"])  # no error: Spark checks these itself
    local = argparse.Namespace(master=None, remote=None, input_format="auto", mode="errorifexists")
    with pytest.raises(OptionError, match="Input '/surely/not/here' does not exist"):
        cli_session.preflight(local, ["/surely/not/here"])
