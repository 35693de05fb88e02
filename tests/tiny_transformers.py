"""Tiny Hugging Face models from configs (random weights, nothing downloaded) for tests.

``transformers`` is a test-only dependency (the ``dev`` extra): tests skip without it.
"""

from __future__ import annotations

import pytest
from torch import nn


def tiny_transformer(kind: str, vocab: int, length: int) -> nn.Module:
    """A 1-layer, width-16 BERT classifier (2 labels, dropout 0) or GPT-2 language model.

    Eager attention: the same ops on every torch build, so the reference is comparable.
    """
    transformers = pytest.importorskip("transformers")
    if kind == "bert":
        config = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=length,
            num_labels=2,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="eager",
        )
        return transformers.BertForSequenceClassification(config)
    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=length,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    return transformers.GPT2LMHeadModel(config)
