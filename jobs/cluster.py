"""spark-submit entry point of the cluster job (the work is in user_spark.cli.cluster).

    spark-submit jobs/cluster.py --help
"""

import sys

from user_spark.cli.cluster import main

if __name__ == "__main__":
    sys.exit(main())
