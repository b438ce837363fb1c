"""``user_spark.compat`` without Spark: error classes and the pyarrow / numpy check."""

from __future__ import annotations

import sys

import pytest

from user_spark import UserSparkError
from user_spark.compat import error_condition, pyspark_version, require_arrow


class _Spark35Error(Exception):
    def getErrorClass(self) -> str:  # pyspark 3.5
        return "PATH_NOT_FOUND"


class _Spark4Error(_Spark35Error):
    def getCondition(self) -> str:  # pyspark 4
        return "TABLE_OR_VIEW_NOT_FOUND"


def test_error_condition_reads_either_method():
    assert error_condition(_Spark35Error()) == "PATH_NOT_FOUND"
    assert error_condition(_Spark4Error()) == "TABLE_OR_VIEW_NOT_FOUND"
    assert error_condition(ValueError("plain")) is None


def test_pyspark_version_is_a_supported_one():
    assert (3, 5) <= pyspark_version() < (5, 0)


class _FailingImport:
    """A meta path finder that fails ``import pyarrow`` the way pyarrow >= 26 does next to numpy 1.x."""

    def __init__(self, message: str) -> None:
        self.message = message

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name == "pyarrow":
            raise ImportError(self.message)
        return None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("pyarrow requires NumPy 2.0 or newer, found 1.26.4", r"pyarrow cannot be imported: .*found 1\.26\.4\..*"
         r"pin numpy<2 on 3\.5; install a pyarrow that supports this numpy \(pip install 'pyarrow<26'\)"),
        ("No module named 'pyarrow'", r"pyarrow cannot be imported \(No module named 'pyarrow'\); pip install"),
    ],
)
def test_an_unimportable_pyarrow_names_the_cause(monkeypatch, message, expected):
    monkeypatch.delitem(sys.modules, "pyarrow", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_FailingImport(message), *sys.meta_path])
    with pytest.raises(UserSparkError, match=expected):
        require_arrow()
