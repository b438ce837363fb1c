"""``python -m user_spark JOB ...``: the same as the ``user-spark`` command."""

import sys

from user_spark.cli.main import main

sys.exit(main())
