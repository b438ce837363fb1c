"""The executor's settings as types: device requests, precisions and forward backends, and their checks.

No torch here: the driver validates these (in :class:`~user_spark.embedding.options.EmbedOptions`) before any
job, with the same functions the executor uses.
"""

from __future__ import annotations

from typing import Literal

from user_spark.errors import OptionError, check_choice

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "DeviceRequest",
    "Precision",
    "check_backend",
    "check_device_request",
    "check_precision",
]

Precision = Literal["auto", "fast", "fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fast", "fp32", "fp16", "bf16", "int8")
Backend = Literal["auto", "fast", "transformers"]
BACKENDS: tuple[Backend, ...] = ("auto", "fast", "transformers")
DeviceRequest = str  # "auto", "cpu", "cuda" or "cuda:N"


def check_precision(precision: str) -> Precision:
    """``precision`` if it is one of :data:`PRECISIONS`, else an :class:`OptionError` listing them."""
    return check_choice("precision", precision, PRECISIONS)


def check_backend(backend: str) -> Backend:
    """``backend`` if it is one of :data:`BACKENDS`, else an :class:`OptionError` listing them."""
    return check_choice("backend", backend, BACKENDS)


def check_device_request(device: str) -> DeviceRequest:
    """``device`` lower-cased if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, else an :class:`OptionError`."""
    req = str(device or "auto").lower()
    if req in ("auto", "cpu", "cuda") or (req.startswith("cuda:") and req[5:].isdigit()):
        return req
    raise OptionError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
