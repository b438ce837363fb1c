"""A user's script over Spark Connect that runs one job and ends without ``spark.stop()``; it must exit.

pyspark releases a checkpointed frame (a cached relation on the server) in ``CachedRemoteRelation.__del__``;
run at interpreter shutdown, that call never returned and such a script hung (issue 16, item 1). Run by
``tests/system/test_connect_exit.py`` against a Connect server it started:

    python tests/connect_exit_script.py --url sc://127.0.0.1:PORT --inputs DIR --model DIR --job dedup
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--job", required=True, choices=["dedup", "cluster", "join", "checkpoint"])
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(args.url).getOrCreate()

    def read(name: str):  # type: ignore[no-untyped-def]
        return spark.read.parquet(os.path.join(args.inputs, name))

    if args.job == "dedup":
        from user_spark import dedup

        res = dedup(read("dups.parquet"), id_col="id", text_col="text", threshold=0.999, model=args.model)
        print("rows kept", res.kept.count(), res.summary)
    elif args.job == "cluster":
        from user_spark import cluster

        res = cluster(read("blobs.parquet"), id_col="id", embedding_col="emb", k=3, seed=3)
        print("assigned", res.assignments.count())
    elif args.job == "join":
        from user_spark import similarity_join

        res = similarity_join(read("q.parquet"), read("p.parquet"), left_id_col="qid", right_id_col="pid",
                              left_text_col="question", right_text_col="passage", k=2, model=args.model)
        print("pairs", res.count())
    else:
        res = spark.range(10).localCheckpoint()
        print("rows", res.count())
    # the script ends here with res alive and the session open, as a user's script would
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
