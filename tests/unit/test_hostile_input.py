"""Hostile text: nulls, empty and huge strings, invalid Unicode, control characters, odd frames.

Every case gives either the right vector (the one the encoder gives the same text on its own) or a clear
error; no row is lost, duplicated or reordered. Property-based tests (hypothesis) check the invariants on the
pure encoder, where examples cost milliseconds, and a few through Spark."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_encoder
from hostile import HOSTILE, alone, hostile_chars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from user_spark.runtime.encoder import valid_unicode

TOL = 1e-5


texts = st.lists(st.one_of(st.none(), st.text(hostile_chars, max_size=60)), max_size=12)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load_encoder(tiny_model)


def test_valid_unicode_replaces_lone_surrogates_and_joins_pairs():
    assert valid_unicode("a\ud800b") == "a\ufffdb"
    assert valid_unicode("\udfff\ud800") == "\ufffd\ufffd"
    assert valid_unicode("\ud83d\ude00") == "\U0001f600"  # a pair written as two code points is one emoji
    assert valid_unicode("обычный 🙂") == "обычный 🙂"


def test_encoder_embeds_every_hostile_text(tiny):
    out = tiny.embed([*HOSTILE, None], "query: ")
    assert out.vectors.shape == (len(HOSTILE) + 1, 64)
    assert out.valid.tolist() == [True] * len(HOSTILE) + [False]
    assert np.isfinite(out.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(out.vectors[:-1], axis=1), 1.0, atol=1e-5)
    assert not out.vectors[-1].any()
    assert out.truncated == 1  # the 100k-character text, and only it
    # A lone surrogate is embedded as U+FFFD would be.
    assert np.abs(out.vectors[4] - alone(tiny, "\ufffd")).max() < TOL


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=texts, budget=st.integers(min_value=8, max_value=600))
def test_encoder_invariants(tiny, batch, budget):
    out = tiny.embed(batch, "passage: ", batch_tokens=budget)
    assert out.vectors.shape == (len(batch), 64)  # row count kept
    assert out.valid.tolist() == [t is not None for t in batch]  # null in -> null out
    for i, text in enumerate(batch):
        if text is None:
            assert not out.vectors[i].any()
        else:  # in order, and the same vector as the text on its own, whatever else shares its batch
            assert np.abs(out.vectors[i] - alone(tiny, text, "passage: ")).max() < TOL


def test_per_row_prefix_count_must_match(tiny):
    with pytest.raises(ValueError, match="2 prefixes for 3 texts"):
        tiny.embed(["a", "b", "c"], ["query: ", "query: "])


def test_huge_texts_are_cut_before_tokenizing_without_changing_their_tokens(tiny, ru_texts):
    import time

    long_text = " ".join(ru_texts) * 40  # ~ 300k characters of real prose
    full = tiny.tokenizer._rust.encode(long_text).ids  # what the tokenizer keeps without the cut
    ids, truncated = tiny.tokenize([long_text])
    assert ids[0].tolist() == full and truncated.tolist() == [True]
    one_word = "Ж" * 1_000_000  # one 1M-character "word": quadratic in BPE, about 100 s uncut
    start = time.perf_counter()
    ids, truncated = tiny.tokenize([one_word, "короткий"])
    assert time.perf_counter() - start < 5 and len(ids[0]) == 512 and truncated.tolist() == [True, False]
