"""The producer thread that keeps a GPU fed: order, errors, shutdown, and the encoder's pipelined loop on CPU."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from user_spark.model.spec import read_model_spec
from user_spark.runtime.device import DeviceChoice
from user_spark.runtime.encoder import Encoder
from user_spark.runtime.pipeline import Prefetcher


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("user_spark-prefetch", "user_spark-tokenize"))]


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    yield
    assert prefetch_threads() == []


def slow_numbers(n: int, delay: float = 0.001):
    for i in range(n):
        time.sleep(delay * (i % 3))  # uneven work, so the producer is sometimes ahead, sometimes behind
        yield i


def test_items_arrive_in_order():
    with Prefetcher(slow_numbers(200), depth=3) as items:
        assert list(items) == list(range(200))


def test_the_producer_stays_at_most_depth_items_ahead():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield i

    with Prefetcher(source(), depth=4) as items:
        for i in items:
            time.sleep(0.002)
            # depth queued, one in the producer's hand, one in ours
            assert len(produced) - i <= 4 + 2


class Boom(RuntimeError):
    pass


def test_an_error_in_the_producer_is_raised_in_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise Boom("tokenizer failed on row 3")

    got = []
    with pytest.raises(Boom, match="row 3") as info, Prefetcher(source(), depth=2) as items:
        for item in items:
            got.append(item)
    assert got == [1, 2]
    assert any(frame.name == "source" for frame in info.traceback)  # the producer's traceback survives


def test_a_consumer_that_stops_early_stops_the_producer_and_runs_its_cleanup():
    cleaned = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            cleaned.set()

    with Prefetcher(endless(), depth=2) as items:
        for item in items:
            if item == 5:
                break
    assert cleaned.is_set()


def test_an_error_in_the_consumer_closes_the_prefetcher():
    with pytest.raises(Boom), Prefetcher(slow_numbers(1000), depth=2) as items:
        for item in items:
            if item == 3:
                raise Boom("GPU batch failed")


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        Prefetcher(iter(()), depth=0)


@pytest.fixture(scope="module")
def encoders(tiny_model):
    spec = read_model_spec(tiny_model)
    sequential = Encoder(spec, tiny_model, DeviceChoice("cpu", "float32", 1, 1))
    pipelined = Encoder(spec, tiny_model, DeviceChoice("cpu", "float32", 1, 2))
    pipelined.pipelined = True  # the GPU loop (waves, producer thread), run on the CPU
    pipelined._tokenize_threads = 2
    return sequential, pipelined


def test_the_pipelined_loop_gives_the_sequential_vectors_in_row_order(encoders, ru_texts):
    sequential, pipelined = encoders
    texts = [None, *ru_texts * 30, None, ""]  # several waves (the first is 512 rows), nulls at both ends
    want = sequential.embed(texts, "query: ")
    got = pipelined.embed(texts, "query: ", batch_tokens=2048)
    assert np.array_equal(got.valid, want.valid)
    assert (got.tokens, got.truncated) == (want.tokens, want.truncated)
    assert np.abs(got.vectors - want.vectors).max() < 1e-5


def test_a_tokenizer_failure_in_the_pipelined_loop_reaches_the_caller(encoders, ru_texts, monkeypatch):
    _, pipelined = encoders
    calls = []

    def failing_tokenize(texts, threads=1):
        calls.append(len(texts))
        if len(calls) == 2:
            raise Boom("second wave")
        return real(texts, threads)

    real = pipelined.tokenizer.tokenize
    monkeypatch.setattr(pipelined.tokenizer, "tokenize", failing_tokenize)
    with pytest.raises(Boom, match="second wave"):
        pipelined.embed(ru_texts * 30, "query: ", batch_tokens=2048)
