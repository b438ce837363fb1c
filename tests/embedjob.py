"""The embed job's test input and its expected output, shared by the CLI tests (in process and as a command)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import EmbedOutput, Encoder


def job_docs(texts: list[str]) -> pd.DataFrame:
    """id, title (a text's first 40 characters), body (null in row 3), year."""
    return pd.DataFrame({
        "id": range(len(texts)),
        "title": [t[:40] for t in texts],
        "body": [None if i == 3 else t for i, t in enumerate(texts)],
        "year": [1800 + i for i in range(len(texts))],
    })


def reference(model_dir: str, texts: list[str | None], prefix: str) -> EmbedOutput:
    return Encoder(read_model_spec(model_dir), model_dir, choose_device()).embed(texts, prefix)


def check_output(path: str, docs: pd.DataFrame, model_dir: str) -> None:
    """Every input column and row kept; body embedded as passage, title as query, equal to the encoder's."""
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
