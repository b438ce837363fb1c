"""The executor-side encoder on its own (no Spark): parity with the references, batching, nulls, truncation."""

from __future__ import annotations

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


def test_out_of_memory_splits_the_batch_and_lowers_the_budget(tiny_model, ru_texts, monkeypatch):
    encoder = make_encoder(tiny_model)
    real_forward = encoder._forward
    sizes = []

    def forward_that_fits_8_rows(input_ids, mask, prompt_lengths):
        sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(input_ids, mask, prompt_lengths)

    monkeypatch.setattr(encoder, "_forward", forward_that_fits_8_rows)
    texts = [ru_texts[0]] * 20 + [ru_texts[0] + " !"] * 20  # one batch of 40 similar rows
    out = encoder.embed(texts, "query: ", batch_tokens=100_000)
    assert sizes[:3] == [40, 20, 10]
    assert sum(s for s in sizes if s <= 8) == 40  # every row embedded exactly once
    monkeypatch.setattr(encoder, "_forward", real_forward)
    reference = encoder.embed(texts, "query: ", batch_tokens=100_000).vectors
    assert np.abs(out.vectors - reference).max() < TOL
    assert encoder._budget_cap is not None
