"""spark-submit entry point of the embed job (the work is in user_spark.cli.embed).

    spark-submit jobs/embed.py --input hdfs:///lake/docs --output hdfs:///lake/docs_emb \
        --column body:passage --model hdfs:///models/USER-base
"""

import sys

from user_spark.cli.embed import main

if __name__ == "__main__":
    sys.exit(main())
