"""The `shards` artifact's files, declared once for the shard stage, the loader and the tests.

A shards artifact holds `train/shard-NNNNN.parquet` and `validation/shard-NNNNN.parquet` (zstd),
each with the same number of rows give or take one, plus `vocab.txt` copied from the tokenizer so
the loader knows special tokens and `##` pieces without looking upstream. Its manifest's layout:

    {"splits": {"train": [{"path", "rows", "tokens"}, ...], "validation": [...]},
     "token_type": "uint16" | "int32", "vocab_size", "special_ids": {"pad", "unk", "cls", "sep",
     "mask"}, "max_seq_len", "objective", "masking", "mlm_prob", "max_predictions",
     "whole_word", "seed", "length_bins"}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from bertflow.pipeline.core.literals import CLS, MASK, PAD, SEP, UNK
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import StoreError
from bertflow.pipeline.shards.masking import MaskingRule

VOCAB_FILE = "vocab.txt"
UINT16_VOCAB = 1 << 16
SPECIAL_NAMES = {"pad": PAD, "unk": UNK, "cls": CLS, "sep": SEP, "mask": MASK}


def token_type(vocab_size: int) -> pa.DataType:
    """uint16 token ids when the vocabulary fits (half the bytes of int32), else int32."""
    return pa.uint16() if vocab_size <= UINT16_VOCAB else pa.int32()


def shard_schema(vocab_size: int, static_masking: bool) -> pa.Schema:
    token = token_type(vocab_size)
    fields = [
        pa.field("input_ids", pa.list_(pa.field("item", token, nullable=False)), nullable=False),
        pa.field("segment_a_len", pa.uint16(), nullable=False),  # len("[CLS] A [SEP]")
        pa.field("next_sentence_label", pa.int8(), nullable=False),  # 1 random/swapped, -1 none
        pa.field("num_tokens", pa.uint16(), nullable=False),
    ]
    if static_masking:  # input_ids then hold the masked tokens
        fields += [
            pa.field("masked_positions", pa.list_(pa.field("item", pa.uint16(), nullable=False))),
            pa.field("masked_ids", pa.list_(pa.field("item", token, nullable=False))),
        ]
    return pa.schema(fields)


def vocab_flags(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(special, continuation) bool arrays over the vocabulary: bracketed tokens such as [CLS]
    or [unused3] are special; `##` pieces continue a word."""
    special = np.array([t.startswith("[") and t.endswith("]") for t in tokens], dtype=bool)
    continuation = np.array([t.startswith("##") for t in tokens], dtype=bool)
    return special, continuation


def masking_rule(layout: dict[str, Any], tokens: list[str], **overrides: Any) -> MaskingRule:
    """The masking rule a shards artifact was made for (fields can be overridden)."""
    special, continuation = vocab_flags(tokens)
    fields = {
        "mlm_prob": layout["mlm_prob"],
        "max_predictions": layout["max_predictions"],
        "whole_word": layout["whole_word"],
        **overrides,
    }
    return MaskingRule(
        mask_id=layout["special_ids"]["mask"], special=special, continuation=continuation, **fields
    )


def length_bin(lengths: np.ndarray, bins: int, max_seq_len: int) -> np.ndarray:
    """Equal-width length bins over 1..max_seq_len tokens, 0 the shortest."""
    return np.minimum(bins - 1, (lengths.astype(np.int64) - 1) * bins // max_seq_len)


def split_entries(manifest: Manifest, split: str) -> list[dict[str, Any]]:
    if manifest.kind != "shards":
        raise StoreError(f"{manifest.id} is a {manifest.kind} artifact, not shards")
    return manifest.layout["splits"][split]
