"""spark-submit entry point of the dedup job (the work is in user_spark.jobs.dedup).

    spark-submit jobs/dedup.py --help
"""

import sys

from user_spark.jobs.dedup import main

if __name__ == "__main__":
    sys.exit(main())
