"""Deprecated: ``user_spark.jobs.<job>`` is now :mod:`user_spark.cli` ``.<job>`` (same ``run``, ``build_parser``,
``main``). Importing it still works for one release, with a :class:`DeprecationWarning`."""

from __future__ import annotations

import importlib
import sys
import warnings

from user_spark.cli.main import JOBS

warnings.warn(
    "user_spark.jobs is deprecated; import user_spark.cli.<job> instead (e.g. from user_spark.cli.embed import main)",
    DeprecationWarning,
    stacklevel=2,
)
for _job in JOBS:
    sys.modules[f"{__name__}.{_job}"] = globals()[_job] = importlib.import_module(f"user_spark.cli.{_job}")
