"""The executor side: what a task runs on each Arrow batch (``executor``), the per-Python-worker model cache
(``worker``), device choice, the encoder (tokenizer, model, token-budget batches, pooling) and the fast
DeBERTa forward path. Nothing here builds Spark plans.
"""
