"""USER-base's folder (its exact architecture, built with random weights) read as a model spec."""

from __future__ import annotations

import pytest

from user_spark.model.spec import read_model_spec

# Full-size models: USER-base's architecture (496 MB, built once per session) and real MiniLM weights.
pytestmark = pytest.mark.slow


def test_user_base_folder(user_base_model):
    spec = read_model_spec(user_base_model)
    assert spec.model_type == "deberta"
    assert spec.dimension == 768
    assert spec.max_seq_length == 512
    assert spec.pooling_modes == ("mean",)
    assert spec.include_prompt is True
    assert spec.normalize is True
    assert spec.prompts == {"query": "query: ", "passage": "passage: "}
    assert spec.transformer_subdir == ""
