from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from user_spark.runtime.batching import pad_batch, plan_batches


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=200),
    budget=st.integers(min_value=1, max_value=5000),
    max_rows=st.one_of(st.none(), st.integers(min_value=1, max_value=50)),
    max_padding=st.floats(min_value=0.0, max_value=1.0),
)
@settings(max_examples=300, deadline=None)
def test_every_row_lands_in_exactly_one_batch_within_budget(lengths, budget, max_rows, max_padding):
    batches = plan_batches(lengths, budget, max_rows, max_padding=max_padding)
    seen = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        # A batch may exceed the budget only when it is a single row longer than the budget.
        assert padded <= budget or len(batch) == 1
        if max_rows is not None:
            assert len(batch) <= max_rows
        longest = max(lengths[i] for i in batch)
        assert all(longest - lengths[i] <= max(max_padding * longest, 2) for i in batch)


def test_longest_rows_first_and_similar_lengths_together():
    lengths = [50, 300, 75, 290, 48, 80]
    batches = plan_batches(lengths, token_budget=600)
    assert batches[0].tolist() == [1, 3]  # 2 x 300 tokens
    assert [b.tolist() for b in batches[1:]] == [[5, 2], [0, 4]]  # 80 with 75, 50 with 48: < 10% padding


def test_budget_alone_when_padding_is_allowed():
    batches = plan_batches([50, 300, 75, 290, 48, 80], token_budget=600, max_padding=1.0)
    assert [sorted(b.tolist()) for b in batches] == [[1, 3], [0, 2, 4, 5]]


def test_padding_is_small_on_real_length_spread():
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(mean=3.3, sigma=0.7, size=2000).astype(int).clip(3, 512)
    batches = plan_batches(lengths, token_budget=8192)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.06
    assert len(batches) < 40


def test_bad_budget_is_rejected():
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches([1, 2], 0)


def test_pad_batch_right_pads_with_mask():
    ids, mask = pad_batch([[0, 5, 2], [0, 2]], pad_id=1)
    assert ids.tolist() == [[0, 5, 2], [0, 2, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ids.dtype == np.int64
