"""The embed job as users run it: ``user-spark embed`` / ``jobs/embed.py`` / ``python -m user_spark``."""

from __future__ import annotations

import pandas as pd
import pytest
from embedjob import check_output, job_docs

from user_spark.cli import main
from user_spark.cli.flags import parse_column


@pytest.fixture(scope="module")
def docs(ru_texts):
    return job_docs(ru_texts)


def test_embed_parquet(spark, tiny_model, docs, tmp_path, capsys):
    src = tmp_path / "docs.parquet"
    docs.to_parquet(src)
    code = main(["embed", "--input", str(src), "--output", str(tmp_path / "out"),
                 "--column", "body:passage", "--column", "title:query", "--model", tiny_model])
    assert code == 0
    check_output(tmp_path / "out", docs, tiny_model)
    summary = capsys.readouterr().out
    assert f"user-spark embed: {2 * len(docs)} texts in 2 column(s)" in summary and "1 null" in summary


@pytest.mark.parametrize("fmt", ["json", "csv", "orc"])
def test_embed_other_input_formats(spark, tiny_model, docs, tmp_path, fmt):
    if fmt == "json":
        src = tmp_path / "docs.jsonl"
        docs.to_json(src, orient="records", lines=True, force_ascii=False)
    elif fmt == "csv":
        src = tmp_path / "docs.csv"
        docs.to_csv(src, index=False)
    else:
        src = tmp_path / "docs_orc"
        spark.createDataFrame(docs).write.orc(str(src))
    code = main(["embed", "--input", str(src), "--output", str(tmp_path / "out"),
                 "--column", "body:passage", "--column", "title", "--model", tiny_model])
    assert code == 0
    out = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert len(out) == len(docs) and {"body_embedding", "title_embedding"} <= set(out.columns)


def test_errors_are_reported_before_work_with_exit_code_2(spark, tiny_model, docs, tmp_path, capsys):
    src = tmp_path / "docs.parquet"
    docs.to_parquet(src)
    code = main(["embed", "--input", str(src), "--output", str(tmp_path / "out"), "--column", "summary:passage",
                 "--model", tiny_model])
    assert code == 2
    assert "error: Column 'summary' not found; available: ['id', 'title', 'body', 'year']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["embed", "--input", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "o"),
                 "--column", "body"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["embed", "--input", str(src), "--output", str(tmp_path / "o"), "--column", "body",
                 "--master", "local[2]", "--remote", "sc://spark-connect:15002"]) == 2
    assert ("error: --master local[2] and --remote sc://spark-connect:15002 exclude each other: a session is "
            "classic or Spark Connect; give one") in capsys.readouterr().err


def test_parse_column():
    assert parse_column("body:passage") == ("body", "passage")
    assert parse_column("title") == ("title", "query")
    assert parse_column("a:b:query") == ("a:b", "query")
