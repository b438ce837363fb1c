"""float16 storage: half the bytes, vectors within fp16 rounding, readable by the jobs and by numpy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from user_spark import OptionError
from user_spark.embedding.storage import float16_to_arrow_list, to_arrow


def test_arrow_round_trip_keeps_nulls_and_rounds_to_half_precision():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5, 7)).astype(np.float32)
    valid = np.array([True, False, True, True, False])
    half = to_arrow(vectors, valid, "float16")
    assert half.type == pa.binary() and half.null_count == 2
    assert [len(b) if b is not None else None for b in half.to_pylist()] == [14, None, 14, 14, None]
    assert np.frombuffer(half[0].as_py(), dtype="<f2").tolist() == vectors[0].astype(np.float16).tolist()
    back = float16_to_arrow_list(half.slice(1))  # a slice: offsets no longer start at 0
    assert back.to_pylist()[0] is None
    got = np.stack([v for v in back.to_pylist() if v is not None])
    assert np.array_equal(got, vectors[valid][1:].astype(np.float16).astype(np.float32))


def test_ragged_float16_buffers_are_refused():
    with pytest.raises(OptionError, match="equally long"):
        float16_to_arrow_list(pa.array([b"\x00\x3c\x00\x3c", b"\x00\x3c"], type=pa.binary()))
