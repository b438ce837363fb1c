"""The library jobs a notebook calls (dedup, cluster, similarity_join, enrich) and their Spark helpers.

Above ``embedding`` (they embed text with the core UDF) and ``ops`` (the numpy math they run inside tasks);
below ``cli``, which adds argument parsing, session setup and writing.
"""
