"""spark-submit entry point of the cluster job (the work is in user_spark.jobs.cluster).

    spark-submit jobs/cluster.py --help
"""

import sys

from user_spark.jobs.cluster import main

if __name__ == "__main__":
    sys.exit(main())
