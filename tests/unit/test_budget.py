"""The token budget: the request, free GPU memory shared among workers, and recovery after out-of-memory."""

from __future__ import annotations

from user_spark.runtime.budget import TokenBudget, activation_bytes_per_token, default_batch_tokens, memory_cap


def test_defaults_per_device():
    assert default_batch_tokens(on_gpu=False) == 8192
    assert default_batch_tokens(on_gpu=True) == 32768


def test_memory_is_divided_among_the_workers_sharing_the_gpu():
    per_token = activation_bytes_per_token(hidden=768, intermediate=3072, heads=12, longest=512, dtype_bytes=2,
                                           packed=True)
    alone = memory_cap(16 << 30, 1, per_token)
    assert memory_cap(16 << 30, 4, per_token) == alone // 4
    # USER-base in half precision: 8 workers sharing an 80 GiB card keep the default budget...
    assert memory_cap(76 << 30, 8, per_token) >= 32768
    # ...8 on what a 16 GiB card has left after their contexts and models (~10 GiB) get a smaller one instead of
    # running out of memory.
    assert 8192 < memory_cap(10 << 30, 8, per_token) < 32768


def test_eager_attention_costs_more_per_token_than_the_packed_path():
    common = {"hidden": 384, "intermediate": 1536, "heads": 12, "longest": 256, "dtype_bytes": 2}
    assert activation_bytes_per_token(**common, packed=False) > activation_bytes_per_token(**common, packed=True)


def test_out_of_memory_halves_the_failed_size_and_binds_the_budget():
    budget = TokenBudget()
    assert budget.limit(32768) == 32768
    assert budget.out_of_memory(30000) == 15000
    assert budget.limit(32768) == 15000
    assert budget.limit(8192) == 8192  # a smaller request is not raised
    assert budget.out_of_memory(15000) == 7500
    assert budget.out_of_memory_count == 2


def test_the_budget_recovers_after_a_run_of_successes():
    budget = TokenBudget(recover_after=4)
    budget.out_of_memory(32768)
    seen = []
    for _ in range(8):
        budget.succeeded(32768)
        seen.append(budget.limit(32768))
    assert seen == [16384] * 3 + [32768] * 5
    assert budget.cap is None


def test_a_new_out_of_memory_restarts_the_count():
    budget = TokenBudget(recover_after=3)
    budget.out_of_memory(1000)
    budget.succeeded(1000)
    budget.succeeded(1000)
    budget.out_of_memory(500)
    budget.succeeded(1000)
    budget.succeeded(1000)
    assert budget.limit(1000) == 250
    budget.succeeded(1000)
    assert budget.limit(1000) == 500


def test_memory_cap_binds_below_the_request():
    assert TokenBudget().limit(32768, memory=20000) == 20000
