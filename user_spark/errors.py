"""Errors a user can act on.

Every error raised for bad input is a :class:`UserSparkError` (a ``ValueError``), and its message says what
went wrong, what was expected, and how to fix it. Driver-side checks raise these before any Spark job runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

_T = TypeVar("_T")

__all__ = [
    "ColumnError",
    "EmbeddingError",
    "ModelSourceError",
    "OptionError",
    "OutputBusyError",
    "RoleError",
    "UserSparkError",
    "check_choice",
]


class UserSparkError(ValueError):
    """Base class of every user_spark error caused by input or configuration."""


class ColumnError(UserSparkError):
    """A column is missing, has the wrong type, or would overwrite an existing one."""


class RoleError(UserSparkError):
    """A role name is not one of the model's prompts."""


class ModelSourceError(UserSparkError):
    """The model cannot be found, fetched or loaded: missing files, unreachable hub, unsafe weights."""


class OptionError(UserSparkError):
    """An option has a value outside its allowed range or set."""


class OutputBusyError(UserSparkError):
    """Another run is writing to the same output."""


class EmbeddingError(RuntimeError):
    """An executor failed while embedding; the message names the model, the device and the partition."""


def check_choice(name: str, value: object, choices: Sequence[_T]) -> _T:
    """``value`` as the member of ``choices`` it equals, or an :class:`OptionError` listing them.

    >>> check_choice("storage", "float16", ("float32", "float16"))
    'float16'
    """
    for choice in choices:
        if value == choice:
            return choice
    raise OptionError(f"{name} must be one of {list(choices)}, got {value!r}")
