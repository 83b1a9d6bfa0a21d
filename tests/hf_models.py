"""Tiny transformers models built here (nothing downloaded), for the folder and Hub tests."""

from __future__ import annotations

from typing import Any

import torch


def tiny_bert(seed: int, hidden: int = 16) -> Any:
    """A randomly initialised two-layer BERT (``transformers`` must be installed)."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
    )
    return transformers.BertModel(config)
