"""Pure numpy, no Spark: block top-k and threshold pairs with union-find forests, LSH, spherical k-means and
IVF lists, text normalisation, block streaming. Unit-tested in milliseconds."""
