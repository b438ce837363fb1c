"""``EmbedOptions``: every option of an embedding, in one frozen object validated once.

Every entry point builds one and passes it down: :func:`~user_spark.embed_udf` and
:func:`~user_spark.with_embeddings` from their keyword arguments, ``UserEmbedder`` from its Params, the jobs
(``dedup``, ``cluster``, ``similarity_join``, ``enrich``) take it as ``embed_options=``, and every CLI job that
embeds builds it from the same flag group. Per-run state (the metrics' accumulators) travels beside it, never
inside it.

>>> opts = EmbedOptions(model="/models/USER-base", precision="fast", batch_tokens=16384)
>>> opts.replace(role="passage").role
'passage'
"""

from __future__ import annotations

import dataclasses
import operator
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from user_spark.embedding.storage import Storage, check_storage
from user_spark.errors import OptionError, check_choice
from user_spark.model.roles import DEFAULT_ROLE, resolve_prompts
from user_spark.model.shipping import Ship, check_ship
from user_spark.model.source import DEFAULT_MODEL
from user_spark.runtime.settings import (
    Backend,
    DeviceRequest,
    Precision,
    check_backend,
    check_device_request,
    check_precision,
)

__all__ = ["EmbedKwargs", "EmbedOptions", "UdfType", "coerce_options"]

UdfType = Literal["auto", "arrow", "pandas"]
_UDF_TYPES: tuple[UdfType, ...] = ("auto", "arrow", "pandas")


def _positive(name: str, value: int | None) -> int | None:
    """``value`` as an ``int`` if it is a whole number >= 1 (numpy integers too), else an :class:`OptionError`."""
    if value is None:
        return None
    try:
        number = 0 if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = 0
    if number < 1:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: the model, the role, batching, device and precision, storage and shipping.

    Attributes:
        model: hub id (default ``deepvk/USER-base``), local folder, or a URI (``hdfs://``, ``s3a://``,
            ``dbfs:/``, ``file:``) of a folder the driver ships to executors.
        role: prompt every text gets unless a column or row says otherwise: ``"query"`` (also for symmetric
            tasks) or ``"passage"``, or another prompt name of the model.
        prompts: role -> prefix table replacing the model folder's prompts.
        revision: hub revision (branch, tag or commit) to fetch.
        model_revision: what output metadata records as the model's revision (default: the hub commit of a hub
            snapshot, else a SHA-256 of the weight files).
        batch_tokens: tokens per model batch, padding included (default 8192 on CPU, 32768 on GPU).
        max_batch_rows: optional cap on rows per model batch.
        device: ``"auto"`` (the task's GPU, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"auto"`` (exact fp32 on CPU, half precision on GPU), ``"fast"``, ``"fp32"``, ``"fp16"``,
            ``"bf16"`` or ``"int8"`` (CPU, opt-in); see docs/BENCHMARKS.md for each mode's speed and quality.
        threads: torch threads per task on CPU (default: the task's ``spark.task.cpus``).
        backend: ``"auto"`` (the fast path for DeBERTa v1 without relative attention, i.e. USER-base;
            transformers for other models), ``"fast"`` or ``"transformers"``.
        storage: ``"float32"`` (``array<float>``) or ``"float16"`` (``binary``, half the bytes).
        udf_type: ``"auto"`` (Arrow-native where pyspark has ``arrow_udf``), ``"arrow"`` or ``"pandas"``.
        ship: copy the model folder to executors: ``"auto"``, ``"always"`` or ``"never"``.
        allow_pickle: accept PyTorch pickle (``.bin``) weights; only for folders you trust.
    """

    model: str = DEFAULT_MODEL
    role: str = DEFAULT_ROLE
    prompts: Mapping[str, str] | None = None
    revision: str | None = None
    model_revision: str | None = None
    batch_tokens: int | None = None
    max_batch_rows: int | None = None
    device: DeviceRequest = "auto"
    precision: Precision = "auto"
    threads: int | None = None
    backend: Backend = "auto"
    storage: Storage = "float32"
    udf_type: UdfType = "auto"
    ship: Ship = "auto"
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise OptionError(f"model must be a hub id, a folder path or a URI; got {self.model!r}")
        if not isinstance(self.role, str) or not self.role:
            raise OptionError(f"role must be a role name such as 'query' or 'passage'; got {self.role!r}")
        if self.prompts is not None:
            object.__setattr__(self, "prompts", resolve_prompts(None, self.prompts))
        for name in ("batch_tokens", "max_batch_rows", "threads"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        object.__setattr__(self, "device", check_device_request(self.device))
        check_precision(self.precision)
        check_backend(self.backend)
        check_storage(self.storage)
        check_ship(self.ship)
        check_choice("udf_type", self.udf_type, _UDF_TYPES)

    def replace(self, **changes: Any) -> EmbedOptions:
        """A copy with ``changes`` applied (and validated); unknown names raise :class:`OptionError`."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def changes(self) -> dict[str, Any]:
        """The fields that differ from their defaults."""
        default = EmbedOptions()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def build(cls, base: EmbedOptions | None = None, **changes: Any) -> EmbedOptions:
        """``base`` (default: all defaults) with ``changes``; ``None`` values leave a field as it is."""
        given = {k: v for k, v in changes.items() if v is not None}
        return (base or cls()).replace(**given) if given else (base or cls())


_FIELDS = frozenset(f.name for f in dataclasses.fields(EmbedOptions))


class EmbedKwargs(TypedDict, total=False):
    """:class:`EmbedOptions`' fields as keyword arguments (``with_embeddings(df, cols, precision="fast")``)."""

    model: str
    role: str
    prompts: Mapping[str, str] | None
    revision: str | None
    model_revision: str | None
    batch_tokens: int | None
    max_batch_rows: int | None
    device: DeviceRequest
    precision: Precision
    threads: int | None
    backend: Backend
    storage: Storage
    udf_type: UdfType
    ship: Ship
    allow_pickle: bool


# Keys an embed_options dict used to carry (before EmbedOptions) that are not embedding options: where they go now.
_MOVED = {"metrics": "pass the counters as the job's own metrics= argument (dedup(..., metrics=m))"}


def _check_names(changes: Mapping[str, Any]) -> None:
    moved = sorted(set(changes) & set(_MOVED))
    if moved:
        raise OptionError("; ".join(f"{name!r} is not an embedding option: {_MOVED[name]}" for name in moved))
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        raise OptionError(f"Unknown embedding option(s) {unknown}; valid: {sorted(_FIELDS)}")


def coerce_options(
    options: EmbedOptions | Mapping[str, Any] | None, *, model: str | None = None, what: str = "embed_options"
) -> EmbedOptions:
    """The :class:`EmbedOptions` a job was given, with ``model=`` applied when set.

    A plain dict is still accepted for one release, with a :class:`DeprecationWarning`.
    """
    if options is None:
        options = EmbedOptions()
    elif not isinstance(options, EmbedOptions):
        if not isinstance(options, Mapping):
            raise OptionError(f"{what} must be an EmbedOptions, got {type(options).__name__}")
        warnings.warn(
            f"{what} as a dict is deprecated; pass user_spark.EmbedOptions(...) instead",
            DeprecationWarning,
            stacklevel=3,
        )
        _check_names(options)
        options = EmbedOptions(**options)
    return options.replace(model=model) if model is not None else options
