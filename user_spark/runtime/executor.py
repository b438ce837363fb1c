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


def embed_texts(target: EncoderTarget, texts: Sequence[str | None], prefixes: str | Sequence[str]) -> EmbedOutput:
    """Embed one batch of texts (``None`` gives an invalid row) on this task's device, with this worker's model.

    Raises:
        UserSparkError: bad input or configuration, as it is (also a GPU that Spark assigned but torch cannot see).
        EmbeddingError: any other failure, naming the model, the device and the partition.
    """
    from user_spark.runtime import faults, task, worker
    from user_spark.runtime.encoder import describe_failure

    facts = task.current()
    choice = worker.place(target.device, target.precision, target.threads, facts)
    try:
        encoder = worker.get_encoder(
            target.cache_key, target.spec, target.location.resolve(), choice, target.name, target.backend
        )
        out = encoder.embed(
            texts, prefixes, batch_tokens=target.batch_tokens, max_batch_rows=target.max_batch_rows,
            gpu_sharers=worker.gpu_sharers() if choice.is_cuda else 1,
        )
    except UserSparkError:
        raise
    except Exception as exc:
        raise describe_failure(target.name, choice, facts.partition, exc) from exc
    faults.maybe_inject_fault(facts.partition)  # test-only; a no-op unless USER_SPARK_TEST_FAULT is set
    if out.truncated:
        logger.warning(
            "%d of %d texts in partition %s were longer than %d tokens and were truncated (model %s)",
            out.truncated, len(texts), facts.partition, target.spec.max_seq_length, target.name,
        )
    if out.recomputed:
        logger.warning(
            "%d of %d texts in partition %s overflowed in %s on %s and were recomputed in fp32 (model %s)",
            out.recomputed, len(texts), facts.partition, choice.dtype, choice.device, target.name,
        )
    return out
