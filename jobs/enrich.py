"""spark-submit entry point of the incremental enrichment job (the work is in user_spark.cli.enrich).

    spark-submit jobs/enrich.py --input hdfs:///lake/docs --input-format parquet \
        --output hdfs:///lake/docs_emb --id-col id --column body:passage --model hdfs:///models/USER-base
"""

import sys

from user_spark.cli.enrich import main

if __name__ == "__main__":
    sys.exit(main())
