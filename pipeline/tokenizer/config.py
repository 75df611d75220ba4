"""`TokenizerConfig`, how a WordPiece vocabulary is made: the `tokenizer` stage's options, the
pipeline's `tokenizer` form, and part of the tokenizer id. Apart from
`stage.py` so that building or checking one needs no `tokenizers`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertflow.pipeline.core.literals import SPECIAL_TOKENS


class TokenizerConfig(BaseModel):
    """How a WordPiece vocabulary is made. Every field but `threads` shapes the artifact's id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(30522, ge=16, le=1 << 20, description="Vocabulary size to train.")
    lowercase: bool = Field(
        True,
        description="Lowercase and strip accents as BERT's uncased models do (--cased keeps both).",
        json_schema_extra={"cli_false_flag": "cased"},
    )
    min_frequency: int = Field(2, ge=1, description="Pieces seen fewer times are not merged.")
    limit_alphabet: int = Field(
        1000, ge=1, description="At most this many distinct characters enter the vocabulary."
    )
    max_chars_per_word: int = Field(
        200, ge=1, description="Longer words become [UNK] (BERT's original: 200)."
    )
    sample_bytes: int = Field(
        1_000_000_000, ge=1, description="Train on a hash-chosen sample of about this many bytes."
    )
    vocab: str | None = Field(
        None, description="Import this BERT vocab.txt (one token per line) instead of training."
    )
    threads: int | None = Field(
        None, ge=1, description="Training threads (default: all cores); the result does not change."
    )

    @model_validator(mode="after")
    def _check(self) -> TokenizerConfig:
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size: must exceed the {len(SPECIAL_TOKENS)} special tokens")
        return self

    def identity(self) -> dict[str, Any]:
        """Fields that shape the output; an imported vocab enters the id by its content hash."""
        return self.model_dump(mode="json", exclude={"threads", "vocab"})
