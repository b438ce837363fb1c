"""Model folders from untrusted places: no pickle without opt-in, no custom code, broken weights named.

The driver checks folders before any job (``test_model_spec.py``); these tests cover what the executor-side
loader does with folders that pass or dodge those checks."""

from __future__ import annotations

import json

import pytest
from conftest import load_encoder

from user_spark import ModelSourceError
from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import Encoder

EVIL_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("custom code ran")
from transformers import DebertaConfig, DebertaModel
class EvilConfig(DebertaConfig):
    model_type = "deberta"
class EvilModel(DebertaModel):
    config_class = EvilConfig
"""


def test_custom_code_in_the_folder_never_runs(model_copy, tmp_path, ru_texts):
    marker = tmp_path / "ran.txt"
    (model_copy / "modeling_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (model_copy / "config.json").write_text(json.dumps(config))
    encoder = load_encoder(model_copy)
    # transformers' own class, not the folder's (the fast path wraps only a transformers DebertaModel)
    assert encoder.backend == "fast-deberta" and type(encoder.model).__name__ == "FastDebertaEncoder"
    plain = Encoder(
        read_model_spec(str(model_copy)), str(model_copy), choose_device(task_cpus=1), backend="transformers"
    )
    assert type(plain.model).__name__ == "DebertaModel"
    assert encoder.embed(ru_texts[:2], "query: ").vectors.shape == (2, 64)
    assert not marker.exists()


def test_custom_model_type_is_refused_without_running_its_code(model_copy, tmp_path):
    marker = tmp_path / "ran.txt"
    (model_copy / "modeling_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = json.loads((model_copy / "config.json").read_text())
    config.update(
        model_type="evil-bert",
        auto_map={"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
    )
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match=r"cannot load .* as 'evil-bert': .*trust_remote_code is always off"):
        load_encoder(model_copy)
    assert not marker.exists()


def _shard(folder):
    """Split model.safetensors into two shards with an index, as large models are saved."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "model.safetensors").unlink()


def test_sharded_folder_with_a_truncated_shard_names_the_shard(model_copy, ru_texts):
    _shard(model_copy)
    assert load_encoder(model_copy).embed(ru_texts[:1], "query: ").vectors.shape == (1, 64)  # whole shards load
    shard = model_copy / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ModelSourceError, match=r"model-00002-of-00002.safetensors is truncated"):
        read_model_spec(str(model_copy))


def test_weights_missing_a_parameter_are_refused_not_filled_with_random_values(model_copy):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model_copy / "model.safetensors"))
    dropped = next(k for k in sorted(tensors) if "attention" in k)
    del tensors[dropped]
    save_file(tensors, str(model_copy / "model.safetensors"), metadata={"format": "pt"})
    spec = read_model_spec(str(model_copy))  # the driver's header checks cannot see this
    with pytest.raises(ModelSourceError, match=r"model.safetensors do not fit .*config.json: 1 parameters missing"):
        Encoder(spec, str(model_copy), choose_device(task_cpus=1))
