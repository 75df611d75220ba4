"""`IngestConfig`, how raw text becomes a corpus: the `ingest` stage's options, the pipeline's
`ingest` form, and part of the corpus id. Apart from `stage.py` so that building or checking one
(the CLI's parser, the pipeline's config) needs none of the readers."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bertflow.pipeline.core.literals import DocSplit, Format


class IngestConfig(BaseModel):
    """How raw text becomes a corpus. Every field but `workers` shapes the artifact's id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[str] = Field(
        min_length=1,
        description="Files, folders, globs, fsspec URLs (s3://...), or 'demo' / 'demo-small'.",
    )
    format: Literal["auto", Format] = Field(
        "auto", description="Input format; 'auto' infers it from each file name."
    )
    text_field: str = Field(
        "text", min_length=1, description="JSON field / Parquet column with the text."
    )
    doc_split: DocSplit = Field(
        "file",
        description="For text and markdown: one document per file, per blank-line-separated block, "
        "or per block between separator lines.",
    )
    doc_separator: str | None = Field(
        None, description="The separator line for doc_split=separator."
    )
    validation_fraction: float = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="Share of documents (chosen by hash) held out for validation.",
    )
    min_validation_documents: int = Field(
        10,
        ge=0,
        description="With validation_fraction above 0, the validation split holds at least this "
        "many documents (those whose hash comes next), or a quarter of the corpus if fewer.",
    )
    min_sentence_chars: int = Field(2, ge=1, description="Shorter sentences are dropped.")
    max_sentence_chars: int = Field(
        2000, ge=16, description="Longer sentences are cut at whitespace into pieces of this size."
    )
    min_doc_chars: int = Field(20, ge=0, description="Documents with fewer characters are dropped.")
    min_doc_sentences: int = Field(
        1, ge=1, description="Documents with fewer sentences are dropped."
    )
    max_doc_chars: int | None = Field(
        None, ge=1, description="Documents with more characters are dropped (no limit when unset)."
    )
    max_bad_fraction: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="The stage fails when more than this share of records is malformed.",
    )
    max_undecodable_fraction: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="A file with a larger share of bytes that are not UTF-8 is refused as not "
        "text (as is one with a NUL byte); bad bytes below it become U+FFFD, counted.",
    )
    on_bad_file: Literal["fail", "skip"] = Field(
        "fail",
        description="A corrupt or unreadable file fails the stage, or is skipped from the point "
        "of the error on (what was read before it is kept) and reported.",
    )
    target_file_mb: float = Field(
        64.0, gt=0, description="Target size of each output Parquet file."
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker processes; the output does not depend on it.",
    )

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        if self.doc_split == "separator" and not self.doc_separator:
            raise ValueError("doc_separator: required when doc_split is 'separator'")
        if self.min_sentence_chars > self.max_sentence_chars:
            raise ValueError("min_sentence_chars: must not exceed max_sentence_chars")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that shape the output. Sources enter the id through their fingerprints."""
        return self.model_dump(mode="json", exclude={"workers", "sources"})
