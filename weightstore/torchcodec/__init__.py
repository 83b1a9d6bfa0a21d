"""Decoding with torch ops on any device: un-grouping and deltas as tensor operations
(``ops``), and objects decoded on a CUDA device with nvCOMP's batched zstd (``gpu``).

Kept out of ``codec`` (which stays free of torch) and imports nothing optional at import:
nvCOMP is loaded only when a GPU decoder is made.
"""
