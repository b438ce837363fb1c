"""Errors a user can act on.

Every error raised for bad input is a :class:`UserSparkError` (a ``ValueError``), and its message says what
went wrong, what was expected, and how to fix it. Driver-side checks raise these before any Spark job runs.
"""

from __future__ import annotations

__all__ = [
    "ColumnError",
    "EmbeddingError",
    "ModelSourceError",
    "OptionError",
    "OutputBusyError",
    "RoleError",
    "UserSparkError",
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
