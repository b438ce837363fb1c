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


def test_the_old_jobs_modules_still_import_with_a_deprecation_warning():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    import user_spark.jobs.embed\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
        "warnings.simplefilter('ignore')\n"
        "import user_spark.jobs.embed, user_spark.cli.embed\n"
        "print(user_spark.jobs.embed is user_spark.cli.embed, user_spark.jobs.embed.main is user_spark.cli.embed.main)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith("warned: user_spark.jobs is deprecated; import user_spark.cli.<job> instead")
    assert out[1] == "True True"
