"""Counters the embedding UDF keeps on executors and the driver reads: rows, nulls, tokens, truncated rows, and
rows recomputed in fp32 because their half-precision vector overflowed.

Spark accumulators, so they cost no extra job. Like every accumulator updated in a transformation, they count
each evaluation: a DataFrame embedded twice (or a retried task) counts twice. Over Spark Connect there are no
accumulators and the counters stay ``None``.

**When they are complete.** A Python worker sends its accumulator updates after the last batch of its task,
so the counts cover the tasks whose output Spark read to the end: after a write (``df.write...``, the
``noop`` sink), ``collect()``, ``toPandas()`` or an aggregate over the embedded column they are exact. Actions
that stop reading early (``show()``, ``first()``, ``take(n)``, ``limit(n).collect()``) embed only what they
need and may report 0 or part of it, even though the model ran. (``df.count()`` without the embedded column
runs no model at all: Spark prunes the column.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["EmbedMetrics"]

_FIELDS = ("rows", "nulls", "tokens", "truncated", "recomputed")


@dataclass
class EmbedMetrics:
    """Accumulators of one embedding UDF; read them after an action has run.

    >>> udf.metrics.as_dict()  # doctest: +SKIP
    {'rows': 1000, 'nulls': 3, 'tokens': 41210, 'truncated': 2, 'recomputed': 0}
    """

    _accumulators: dict[str, Any] | None = None

    @classmethod
    def create(cls, spark: SparkSession) -> EmbedMetrics:
        from user_spark.connect import is_connect

        if is_connect(spark):  # no SparkContext, so no accumulators
            return cls(None)
        sc = spark.sparkContext
        return cls({name: sc.accumulator(0) for name in _FIELDS})

    def add(self, *, rows: int, nulls: int, tokens: int, truncated: int, recomputed: int = 0) -> None:
        """Executor side: count one Arrow batch."""
        if self._accumulators is None:
            return
        acc = self._accumulators
        acc["rows"].add(rows)
        acc["nulls"].add(nulls)
        acc["tokens"].add(tokens)
        acc["truncated"].add(truncated)
        acc["recomputed"].add(recomputed)

    def as_dict(self) -> dict[str, int | None]:
        """Driver side: the counts so far (``None`` where Spark has no accumulators)."""
        if self._accumulators is None:
            return dict.fromkeys(_FIELDS)
        return {name: int(acc.value) for name, acc in self._accumulators.items()}

    def __getattr__(self, name: str) -> int | None:
        if name in _FIELDS:
            return self.as_dict()[name]
        raise AttributeError(name)
