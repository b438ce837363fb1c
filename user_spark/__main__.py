"""``python -m user_spark JOB ...``: the same as the ``user-spark`` command."""

import sys

from .cli import main

sys.exit(main())
