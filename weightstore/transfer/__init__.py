"""Host <-> device transfers: pinned staging buffers and CUDA streams, shared by the reader
(restores to a GPU) and the task loader (swaps into a live model)."""

from weightstore.transfer.staging import Transfer, copy_all, host_copy, host_empty

__all__ = ["Transfer", "copy_all", "host_copy", "host_empty"]
