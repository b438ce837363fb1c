"""The executor-side encoder on its own (no Spark): parity with the references, batching, nulls, truncation."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from conftest import sentence_transformers_reference

from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import Encoder

TOL = 1e-5


def make_encoder(model_dir: str, **spec_options) -> Encoder:
    return Encoder(read_model_spec(model_dir, **spec_options), model_dir, choose_device(task_cpus=2))


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return make_encoder(tiny_model)


def test_embedding_does_not_depend_on_budget_order_or_batch_company(tiny, ru_texts):
    base = tiny.embed(ru_texts, "query: ", batch_tokens=100_000).vectors
    for budget in (1, 64, 700, 5000):
        assert np.abs(tiny.embed(ru_texts, "query: ", batch_tokens=budget).vectors - base).max() < TOL
    perm = np.random.default_rng(0).permutation(len(ru_texts))
    shuffled = tiny.embed([ru_texts[i] for i in perm], "query: ").vectors
    assert np.abs(shuffled - base[perm]).max() < TOL
    single = np.stack([tiny.embed([t], "query: ").vectors[0] for t in ru_texts[:5]])
    assert np.abs(single - base[:5]).max() < TOL


def test_nulls_stay_null_and_rows_stay_in_place(tiny, ru_texts):
    texts = [None, ru_texts[0], None, ru_texts[1], ""]
    out = tiny.embed(texts, "query: ")
    assert out.valid.tolist() == [False, True, False, True, True]
    assert not out.vectors[0].any() and not out.vectors[2].any()
    alone = tiny.embed([ru_texts[0], ru_texts[1], ""], "query: ").vectors
    assert np.abs(out.vectors[[1, 3, 4]] - alone).max() < TOL
    assert tiny.embed([None, None], "query: ").tokens == 0


def test_per_row_prefixes_equal_one_prefix_at_a_time(tiny, ru_texts):
    texts = ru_texts[:10]
    prefixes = ["query: " if i % 3 else "passage: " for i in range(10)]
    mixed = tiny.embed(texts, prefixes).vectors
    q = tiny.embed(texts, "query: ").vectors
    p = tiny.embed(texts, "passage: ").vectors
    expected = np.stack([q[i] if prefixes[i] == "query: " else p[i] for i in range(10)])
    assert np.abs(mixed - expected).max() < TOL
    assert np.abs(q - p).max() > 1e-3  # the prefix changes the embedding


def test_prompt_excluded_from_pooling_matches_sentence_transformers(tiny_model, tmp_path, ru_texts):
    import json
    import shutil

    folder = tmp_path / "no-prompt-pooling"
    shutil.copytree(tiny_model, folder)
    cfg_path = folder / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["include_prompt"] = False
    cfg_path.write_text(json.dumps(cfg))
    texts = ru_texts[:12]
    ours = make_encoder(str(folder)).embed(texts, "passage: ").vectors
    assert np.abs(ours - sentence_transformers_reference(str(folder), texts, "passage: ")).max() < TOL


@pytest.mark.parametrize("mode", ["cls", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"])
def test_other_pooling_modes_match_sentence_transformers(tiny_model, tmp_path, ru_texts, mode):
    import json
    import shutil

    folder = tmp_path / mode
    shutil.copytree(tiny_model, folder)
    cfg_path = folder / "1_Pooling" / "config.json"
    cfg = {"word_embedding_dimension": 64, "pooling_mode": mode}
    cfg_path.write_text(json.dumps(cfg))
    texts = ru_texts[:12]
    ours = make_encoder(str(folder)).embed(texts, "query: ").vectors
    assert np.abs(ours - sentence_transformers_reference(str(folder), texts, "query: ")).max() < TOL


def test_truncation_is_counted(tiny, ru_texts):
    long_text = " ".join(ru_texts)  # thousands of tokens
    out = tiny.embed([long_text, ru_texts[0]], "query: ")
    assert out.truncated == 1
    assert out.tokens == 512 + len(tiny.tokenize(["query: " + ru_texts[0]])[0][0])


class DeviceMemory:
    """A device memory of ``capacity`` bytes whose allocations really hold memory while they are referenced.

    Each allocation is a CPU tensor; a finalizer gives its bytes back when the tensor is freed. A forward that
    fails keeps what it allocated alive for as long as its traceback lives, as CUDA activations would.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.failures: list[int] = []

    def allocate(self, nbytes: int) -> torch.Tensor:
        if self.used + nbytes > self.capacity:
            self.failures.append(nbytes)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated): {nbytes} bytes asked, "
                                              f"{self.capacity - self.used} free")
        tensor = torch.empty(nbytes, dtype=torch.uint8)
        self.used += nbytes
        weakref.finalize(tensor, self._free, nbytes)
        return tensor

    def _free(self, nbytes: int) -> None:
        self.used -= nbytes


def hungry_forward(module, memory: DeviceMemory, bytes_per_token: int):
    """``module.forward_packed`` that first allocates two layers' worth of activations from ``memory``."""
    real = module.forward_packed

    def forward_packed(flat_ids, positions, scatter, key_mask, batch, length):
        first_layer = memory.allocate(batch * length * bytes_per_token)
        second_layer = memory.allocate(batch * length * bytes_per_token)
        del first_layer, second_layer
        return real(flat_ids, positions, scatter, key_mask, batch, length)

    return forward_packed


def test_out_of_memory_is_retried_in_halves_after_the_failed_batch_freed_its_memory(tiny_model, ru_texts, monkeypatch):
    encoder = make_encoder(tiny_model)
    texts = [ru_texts[0]] * 20 + [ru_texts[0] + " !"] * 20  # one batch of 40 similar rows
    reference = encoder.embed(texts, "query: ", batch_tokens=100_000).vectors
    padded = 40 * max(len(x) for x in encoder.tokenize(["query: " + t for t in texts])[0])
    # The whole batch needs 2 x padded x 100 bytes and fails at its second layer, holding the first; a half needs
    # 1 x padded x 100, which fits only if the failed batch's first layer is gone by then.
    memory = DeviceMemory(capacity=int(1.5 * padded * 100))
    monkeypatch.setattr(encoder.runner.loaded.module, "forward_packed",
                        hungry_forward(encoder.runner.loaded.module, memory, 100))

    out = encoder.embed(texts, "query: ", batch_tokens=100_000)

    assert len(memory.failures) == 1  # the halves fit at once: no cascade of splits
    assert memory.used == 0
    assert np.abs(out.vectors - reference).max() < TOL  # every row embedded, in place
    assert encoder.budget.cap == padded // 2 and encoder.budget.out_of_memory_count == 1


def test_a_text_that_alone_does_not_fit_fails_with_a_clear_out_of_memory(tiny_model, ru_texts, monkeypatch):
    encoder = make_encoder(tiny_model)
    monkeypatch.setattr(encoder.runner.loaded.module, "forward_packed",
                        hungry_forward(encoder.runner.loaded.module, DeviceMemory(capacity=100), 100))
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"one text of .* tokens does not fit .* cpu"):
        encoder.embed(ru_texts[:4], "query: ")


@pytest.fixture(scope="module")
def overflowing_model(tiny_model, tmp_path_factory, ru_texts):
    from overflow_model import overflowing_copy

    return overflowing_copy(tiny_model, str(tmp_path_factory.mktemp("overflow") / "model"), ru_texts)


def test_rows_that_overflow_in_half_precision_are_recomputed_in_fp32(overflowing_model, ru_texts):
    from user_spark.runtime.device import DeviceChoice

    folder, hit = overflowing_model
    half = Encoder(read_model_spec(folder), folder, DeviceChoice("cpu", "float16", 1, 1))
    exact = make_encoder(folder).embed(ru_texts, "query: ").vectors
    with torch.inference_mode():  # the overflow is real: float16 holds inf where that token sits
        assert torch.isinf(half.model.word.weight).any()

    out = half.embed(ru_texts, "query: ")

    assert out.recomputed == int(hit.sum()) > 0
    assert np.isfinite(out.vectors).all()
    assert np.abs(out.vectors[hit] - exact[hit]).max() < TOL  # recomputed rows: fp32's vectors
    cosine = (out.vectors[~hit] * exact[~hit]).sum(axis=1)
    assert cosine.min() > 0.999  # the rest: float16's, close to fp32


def test_inf_in_fp32_is_an_error_not_a_nan_vector(overflowing_model, ru_texts, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from user_spark.errors import EmbeddingError

    folder = tmp_path / "broken"
    shutil.copytree(overflowing_model[0], folder)
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name][weights[name] == 1e5] = float("inf")
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(EmbeddingError, match="inf/NaN embeddings in fp32"):
        make_encoder(str(folder)).embed(ru_texts, "query: ")
