"""The installed user-spark console script on its own local Spark."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import Encoder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def docs(ru_texts):
    return pd.DataFrame({
        "id": range(len(ru_texts)),
        "title": [t[:40] for t in ru_texts],
        "body": [None if i == 3 else t for i, t in enumerate(ru_texts)],
        "year": [1800 + i for i in range(len(ru_texts))],
    })


def reference(model_dir, texts, prefix):
    enc = Encoder(read_model_spec(model_dir), model_dir, choose_device())
    return enc.embed(texts, prefix)


def check_output(path, docs, model_dir):
    out = pd.read_parquet(path).sort_values("id").reset_index(drop=True)
    assert list(out.columns) == ["id", "title", "body", "year", "body_embedding", "title_embedding"]
    assert out["id"].tolist() == docs["id"].tolist()
    assert out["year"].tolist() == docs["year"].tolist()
    assert out["body_embedding"][3] is None
    ref = reference(model_dir, docs["body"].tolist(), "passage: ")
    got = np.stack([v for v in out["body_embedding"] if v is not None])
    assert np.abs(got - ref.vectors[ref.valid]).max() < 1e-5
    ref_t = reference(model_dir, docs["title"].tolist(), "query: ").vectors
    assert np.abs(np.stack(out["title_embedding"]) - ref_t).max() < 1e-5


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
