"""The choices and names that more than one module spells, each declared once: the literal
types of config fields and records, and the special tokens every vocabulary starts with."""

from __future__ import annotations

from typing import Literal

Split = Literal["train", "validation"]  # a corpus's and a shards artifact's two parts
Format = Literal["text", "markdown", "jsonl", "json", "parquet", "wikipedia"]  # raw input files
DocSplit = Literal["file", "blank-lines", "separator"]  # where a text file's documents end
Objective = Literal["nsp", "sop", "none"]  # the sentence-pair objective beside MLM
Masking = Literal["dynamic", "static"]  # masks drawn at load time, or once and stored
Schedule = Literal["linear", "one-cycle"]  # the learning rate after warm-up
Problem = Literal["classification", "regression"]  # what a downstream task predicts

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # trained vocabularies put them first: [PAD] = 0
PAD_ID = SPECIAL_TOKENS.index(PAD)
