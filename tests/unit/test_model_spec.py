"""Reading and checking model folders on the driver: modules, pooling, prompts, weights, tokenizer."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from user_spark.errors import ModelSourceError
from user_spark.model.spec import read_model_spec


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_minilm_folder_has_no_prompts_so_user_base_defaults_apply(minilm_model):
    spec = read_model_spec(minilm_model)
    assert (spec.dimension, spec.max_seq_length, spec.normalize) == (384, 256, True)
    assert spec.prompts == {"query": "query: ", "passage": "passage: "}


def test_plain_hugging_face_folder_means_mean_pooling_without_normalisation(model_copy):
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        os.remove(model_copy / name)
    shutil.rmtree(model_copy / "1_Pooling")
    spec = read_model_spec(str(model_copy))
    assert spec.pooling_modes == ("mean",) and spec.normalize is False
    assert spec.max_seq_length == 512  # min(tokenizer model_max_length, max_position_embeddings)


def test_missing_folder():
    with pytest.raises(ModelSourceError, match="does not exist"):
        read_model_spec("/nonexistent/model")


def test_folder_without_weights(model_copy):
    os.remove(model_copy / "model.safetensors")
    with pytest.raises(ModelSourceError, match=r"No weights in .*expected model.safetensors"):
        read_model_spec(str(model_copy))


def test_folder_without_tokenizer(model_copy):
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        os.remove(model_copy / name)
    with pytest.raises(ModelSourceError, match="No tokenizer in"):
        read_model_spec(str(model_copy))


def test_pickle_only_weights_need_opt_in(model_copy):
    os.remove(model_copy / "model.safetensors")
    (model_copy / "pytorch_model.bin").write_bytes(b"not loaded by this check")
    with pytest.raises(ModelSourceError, match=r"only PyTorch pickle weights \(pytorch_model.bin\).*allow_pickle=True"):
        read_model_spec(str(model_copy))
    assert read_model_spec(str(model_copy), allow_pickle=True).uses_pickle


def test_truncated_safetensors_names_the_file(model_copy):
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSourceError, match=r"model.safetensors is truncated"):
        read_model_spec(str(model_copy))


def test_garbage_safetensors_names_the_file(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"\x00\x01")
    with pytest.raises(ModelSourceError, match=r"model.safetensors is not a valid safetensors file"):
        read_model_spec(str(model_copy))


def test_config_that_does_not_match_the_weights(model_copy):
    _edit_json(model_copy / "config.json", vocab_size=1000)
    with pytest.raises(ModelSourceError, match=r"word_embeddings.weight has shape .* vocab_size=1000"):
        read_model_spec(str(model_copy))
    _edit_json(model_copy / "config.json", vocab_size=50265, num_hidden_layers=12)
    with pytest.raises(ModelSourceError, match=r"hold 2 layers but config.json says num_hidden_layers=12"):
        read_model_spec(str(model_copy))


def test_unsupported_module_is_named(model_copy):
    modules = json.loads((model_copy / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (model_copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelSourceError, match="Dense module, which user_spark does not run"):
        read_model_spec(str(model_copy))


def test_unknown_pooling_mode(model_copy):
    _edit_json(model_copy / "1_Pooling" / "config.json", pooling_mode="median")
    with pytest.raises(ModelSourceError, match="pooling \\['median'\\]"):
        read_model_spec(str(model_copy))


def test_prompt_override(model_copy):
    assert read_model_spec(str(model_copy), prompts={"query": ""}).prompts == {"query": ""}
