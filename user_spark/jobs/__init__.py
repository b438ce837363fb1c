"""Library side of the spark-submit jobs: each module has ``run(spark, config) -> DataFrame`` (no writes, callable
from a notebook), ``build_parser()`` and ``main(argv=None) -> int`` (parse, start Spark, run, write, stop).
"""
