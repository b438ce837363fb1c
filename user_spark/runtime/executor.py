"""The executor side of one embedding call: pick the task's device, take this worker's encoder, embed a batch.

:class:`EncoderTarget` is what the driver sends (pickled inside the UDF): which model, where the executors find
it, and how to run it. :func:`embed_texts` is what a UDF calls on every Arrow batch; it knows nothing of Spark
UDFs or metrics, so the embedding layer wraps it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from user_spark.errors import UserSparkError
from user_spark.model.shipping import ModelLocation
from user_spark.model.spec import ModelSpec
from user_spark.runtime.settings import Backend, DeviceRequest, Precision

if TYPE_CHECKING:
    from user_spark.runtime.encoder import EmbedOutput

__all__ = ["EncoderTarget", "embed_texts"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderTarget:
    """One model and how an executor runs it; small and picklable.

    Attributes:
        name: the model as the user named it, for messages.
        spec: the model folder's spec; location: where executors find the folder.
        device, precision, threads, backend, batch_tokens, max_batch_rows: see
            :class:`~user_spark.embedding.options.EmbedOptions`.
    """

    name: str
    spec: ModelSpec
    location: ModelLocation
    device: DeviceRequest = "auto"
    precision: Precision = "auto"
    threads: int | None = None
    backend: Backend = "auto"
    batch_tokens: int | None = None
    max_batch_rows: int | None = None

    @property
    def cache_key(self) -> tuple[str, str, str]:
        """Identifies the loaded model in a worker's cache (prompts and batching do not change the model)."""
        return (self.location.kind, self.location.value, self.spec.transformer_subdir)


def _partition() -> int | None:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.partitionId() if ctx is not None else None


def embed_texts(target: EncoderTarget, texts: Sequence[str | None], prefixes: str | Sequence[str]) -> EmbedOutput:
    """Embed one batch of texts (``None`` gives an invalid row) on this task's device, with this worker's model.

    Raises:
        UserSparkError: bad input or configuration, as it is.
        EmbeddingError: any other failure, naming the model, the device and the partition.
    """
    from user_spark.runtime import faults, worker
    from user_spark.runtime.device import task_device
    from user_spark.runtime.encoder import describe_failure

    partition = _partition()
    choice = task_device(target.device, target.precision, target.threads)
    try:
        encoder = worker.get_encoder(
            target.cache_key, target.spec, target.location.resolve(), choice, target.name, target.backend
        )
        out = encoder.embed(texts, prefixes, batch_tokens=target.batch_tokens, max_batch_rows=target.max_batch_rows)
    except UserSparkError:
        raise
    except Exception as exc:
        raise describe_failure(target.name, choice, partition, exc) from exc
    faults.maybe_inject_fault(partition)  # test-only; a no-op unless USER_SPARK_TEST_FAULT is set
    if out.truncated:
        logger.warning(
            "%d of %d texts in partition %s were longer than %d tokens and were truncated (model %s)",
            out.truncated, len(texts), partition, target.spec.max_seq_length, target.name,
        )
    return out
