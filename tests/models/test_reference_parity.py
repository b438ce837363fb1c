"""The encoder at full model size against the references: USER-base's architecture (model card,
sentence-transformers), real all-MiniLM-L6-v2 weights, the fast DeBERTa path, reduced precisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import model_card_reference, sentence_transformers_reference

from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import choose_device
from user_spark.runtime.encoder import Encoder

# Full-size models: USER-base's architecture (496 MB, built once per session) and real MiniLM weights.
pytestmark = pytest.mark.slow


TOL = 1e-5


def make_encoder(model_dir: str, **spec_options) -> Encoder:
    return Encoder(read_model_spec(model_dir, **spec_options), model_dir, choose_device(task_cpus=2))


@pytest.fixture(scope="module")
def user_base(user_base_model):
    return make_encoder(user_base_model)


@pytest.fixture(scope="module")
def minilm(minilm_model):
    return make_encoder(minilm_model)


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
