"""The executor-side encoder on its own (no Spark): parity with the references, batching, nulls, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import model_card_reference, sentence_transformers_reference

from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import Encoder

TOL = 1e-5


def make_encoder(model_dir: str, **spec_options) -> Encoder:
    return Encoder(read_model_spec(model_dir, **spec_options), model_dir, choose_device(task_cpus=2))


@pytest.fixture(scope="module")
def user_base(user_base_model):
    return make_encoder(user_base_model)


@pytest.fixture(scope="module")
def minilm(minilm_model):
    return make_encoder(minilm_model)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return make_encoder(tiny_model)


@pytest.mark.parametrize("prefix", ["query: ", "passage: "])
def test_user_base_architecture_matches_model_card_and_sentence_transformers(
    user_base, user_base_model, ru_texts, prefix
):
    texts = ru_texts[:24] + ru_texts[-2:]  # sentences and two long paragraphs
    ours = user_base.embed(texts, prefix, batch_tokens=1024).vectors
    assert ours.shape == (len(texts), 768)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert np.abs(ours - model_card_reference(user_base_model, texts, prefix, 512)).max() < TOL
    assert np.abs(ours - sentence_transformers_reference(user_base_model, texts, prefix)).max() < TOL


def test_real_minilm_weights_match_sentence_transformers_including_truncation(minilm, minilm_model, ru_texts):
    # all-MiniLM's English tokenizer cuts Russian into many pieces: the paragraphs exceed its 256 tokens.
    out = minilm.embed(ru_texts, "query: ", batch_tokens=2048)
    assert out.truncated >= 3
    ref = sentence_transformers_reference(minilm_model, ru_texts, "query: ")
    assert np.abs(out.vectors - ref).max() < TOL
    assert np.abs(out.vectors - model_card_reference(minilm_model, ru_texts, "query: ", 256)).max() < TOL


def test_real_minilm_ranks_paraphrases_above_unrelated_sentences(minilm):
    from conftest import paraphrase_pairs

    pairs = paraphrase_pairs()[:30]
    left = minilm.embed([a for a, _ in pairs], "query: ").vectors
    right = minilm.embed([b for _, b in pairs], "query: ").vectors
    sims = left @ right.T
    # Real weights: a sentence's paraphrase is its nearest neighbour far more often than chance (1/30).
    assert (sims.argmax(axis=1) == np.arange(len(pairs))).mean() > 0.5


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


def test_fast_deberta_path_equals_transformers_deberta_model(user_base_model, ru_texts):
    from transformers import AutoModel

    from user_spark.runtime.batching import pad_batch
    from user_spark.runtime.fast_deberta import FastDebertaEncoder, supports

    model = AutoModel.from_pretrained(user_base_model).eval()
    assert supports(model)
    fast = FastDebertaEncoder(model).eval()
    enc = make_encoder(user_base_model)
    ids, _ = enc.tokenize(["query: " + t for t in ru_texts[:6] + ru_texts[-2:]])  # very different lengths
    input_ids, mask = (torch.from_numpy(a) for a in pad_batch(ids, enc.pad_id))
    with torch.inference_mode():
        ref = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = fast(input_ids=input_ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max().item() < 1e-4
    assert not got[~real].any()  # padding positions are zeros, not garbage


def test_backends_agree_and_fast_is_chosen_for_user_base(user_base_model, ru_texts):
    spec = read_model_spec(user_base_model)
    fast = Encoder(spec, user_base_model, choose_device(task_cpus=2))
    slow = Encoder(spec, user_base_model, choose_device(task_cpus=2), backend="transformers")
    assert (fast.backend, slow.backend) == ("fast-deberta", "transformers")
    texts = ru_texts[:10]
    assert np.abs(fast.embed(texts, "query: ").vectors - slow.embed(texts, "query: ").vectors).max() < TOL


def test_fast_backend_refuses_other_architectures(minilm_model):
    from user_spark.errors import OptionError

    assert make_encoder(minilm_model).backend == "transformers"
    with pytest.raises(OptionError, match="backend='fast' runs DeBERTa v1 without relative attention"):
        Encoder(read_model_spec(minilm_model), minilm_model, choose_device(), backend="fast")


# Measured on real Russian text with bench/quality.py: bf16 0.9999 mean cosine to fp32, int8 0.95 (docs/BENCHMARKS.md).
@pytest.mark.parametrize(("precision", "mean_cos"), [("int8", 0.93), ("bf16", 0.999)])
def test_reduced_precision_on_real_weights_stays_close_to_fp32(minilm_model, minilm, ru_texts, precision, mean_cos):
    reduced = Encoder(read_model_spec(minilm_model), minilm_model, choose_device(precision=precision, task_cpus=2))
    texts = ru_texts[:20]
    exact = minilm.embed(texts, "query: ").vectors
    approx = reduced.embed(texts, "query: ").vectors
    cosines = (exact * approx).sum(axis=1)
    assert cosines.mean() > mean_cos
    assert np.abs(exact - approx).max() > 1e-6  # really a different computation
    if precision == "int8":
        assert reduced.backend.endswith("+int8")
        assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in reduced.model.modules())
