"""BERT's architecture config and the published sizes as presets, apart from the model so that
reading or validating a config (the CLI, the pipeline's form) needs no torch."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

Pooling = Literal["cls", "mean"]
"""What a sequence classifier reads: the pooled [CLS] output, or the mean over the real tokens."""


@dataclass(frozen=True)
class BertConfig:
    """The architecture. Bad values are rejected when the config is made, naming the field."""

    vocab_size: int = 30522
    """Tokens in the tokenizer's vocabulary."""
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    """Width of each layer's feed-forward block (4 x hidden in every published BERT)."""
    max_position_embeddings: int = 512
    """Longest sequence the model can take."""
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_vocab_multiple: int = 64
    """The embedding matrix gets rows up to a multiple of this (1: none)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("dropout"):
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"BertConfig.{f.name} must be in [0, 1), got {value}")
            elif value <= 0:
                raise ValueError(f"BertConfig.{f.name} must be positive, got {value}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                f"({self.num_heads})"
            )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return -(-self.vocab_size // m) * m


# -- presets: the published BERT sizes (Turc et al. 2019 for the compact ones) -------------------


def tiny(**changes) -> BertConfig:
    """2 layers, 128 wide: tests and the CPU demo."""
    return replace(
        BertConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512), **changes
    )


def mini(**changes) -> BertConfig:
    """4 layers, 256 wide."""
    return replace(
        BertConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024), **changes
    )


def small(**changes) -> BertConfig:
    """4 layers, 512 wide."""
    return replace(
        BertConfig(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048), **changes
    )


def medium(**changes) -> BertConfig:
    """8 layers, 512 wide."""
    return replace(
        BertConfig(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048), **changes
    )


def base(**changes) -> BertConfig:
    """BERT-base: 12 layers, 768 wide, 12 heads (110M parameters at 30522 tokens)."""
    return replace(BertConfig(), **changes)


def large(**changes) -> BertConfig:
    """BERT-large: 24 layers, 1024 wide, 16 heads (340M parameters)."""
    return replace(
        BertConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
        **changes,
    )


PRESETS = {f.__name__: f for f in (tiny, mini, small, medium, base, large)}


def preset(name: str, **changes) -> BertConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](**changes)
