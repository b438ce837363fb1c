from __future__ import annotations

import subprocess
import sys

import user_spark


def test_every_public_name_imports():
    for name in user_spark.__all__:
        assert getattr(user_spark, name) is not None, name


def test_import_is_cheap_no_torch_or_transformers():
    code = "import sys, user_spark; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_errors_are_value_errors():
    assert issubclass(user_spark.ColumnError, user_spark.UserSparkError)
    assert issubclass(user_spark.UserSparkError, ValueError)
