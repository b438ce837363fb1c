"""spark-submit entry point of the join job (the work is in user_spark.jobs.join).

    spark-submit jobs/join.py --help
"""

import sys

from user_spark.jobs.join import main

if __name__ == "__main__":
    sys.exit(main())
