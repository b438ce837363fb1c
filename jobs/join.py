"""spark-submit entry point of the join job (the work is in user_spark.cli.join).

    spark-submit jobs/join.py --help
"""

import sys

from user_spark.cli.join import main

if __name__ == "__main__":
    sys.exit(main())
