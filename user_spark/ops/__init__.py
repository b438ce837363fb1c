"""Pure numpy, no Spark: block top-k and threshold pairs with union-find forests, LSH, spherical k-means
(training on a sample, two-level indexes, nearest and margin assignment), IVF lists and tiles, text
normalisation, block streaming. Unit-tested in milliseconds."""
