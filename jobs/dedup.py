"""spark-submit entry point of the dedup job (the work is in user_spark.cli.dedup).

    spark-submit jobs/dedup.py --help
"""

import sys

from user_spark.cli.dedup import main

if __name__ == "__main__":
    sys.exit(main())
