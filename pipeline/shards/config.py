"""`ShardConfig`, how BERT examples are made and sharded: the `shard` stage's options, the
pipeline's `phases.N.shard` form, and part of the shards id. Apart from `stage.py` so that
building or checking one needs no `tokenizers` or Arrow."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator

from bertflow.pipeline.core.literals import Masking, Objective, Split

# The fields whose default follows from others, and how.
DERIVED_DEFAULTS: dict[str, Callable[[ShardConfig], int]] = {
    "dupe_factor": lambda c: 1 if c.masking == "dynamic" else 5,
    "max_predictions": lambda c: max(1, round(c.max_seq_len * c.mlm_prob)),
    "num_validation_shards": lambda c: c.num_shards,
}


class ShardConfig(BaseModel):
    """How BERT examples are made and sharded. Every field but `workers` shapes the id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_seq_len: int = Field(
        128,
        ge=16,
        le=8192,
        description="Tokens per example, specials included (at least 16: [CLS] A [SEP] B [SEP] "
        "needs room for two segments).",
    )
    short_seq_prob: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of documents given a random shorter target length."
    )
    dupe_factor: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Passes over the corpus, each pairing sentences anew (default: 1 with dynamic "
        "masking, 5 with static).",
    )
    objective: Objective = Field(
        "nsp", description="Next-sentence, sentence-order (ALBERT) or no pair objective (RoBERTa)."
    )
    masking: Masking = Field(
        "dynamic", description="Mask at load time (new each epoch) or once here, stored."
    )
    mlm_prob: float = Field(0.15, gt=0.0, lt=1.0, description="Share of tokens to predict.")
    max_predictions: int | None = Field(
        None, ge=1, description="Most tokens predicted per example (default: max_seq_len*mlm_prob)."
    )
    whole_word: bool = Field(False, description="Mask whole words (a word's ## pieces together).")
    num_shards: int = Field(
        16, ge=1, le=100_000, description="Train shards; make it a multiple of ranks x workers."
    )
    num_validation_shards: int | None = Field(
        None, ge=1, le=100_000, description="Validation shards (default: as many as train shards)."
    )
    batch_size: int = Field(
        32, ge=1, description="Batch size the padding statistic assumes (not stored in shards)."
    )
    length_bins: int = Field(
        1,
        ge=1,
        le=64,
        description="LDDL-style length bins the loader batches within, so batches pad little "
        "(1: none). Recorded for the loader, which groups each shuffle block by bin.",
    )
    seed: int = Field(12345, description="Base seed of every random choice.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Worker processes; the output does not depend on it.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _derived_defaults(
        cls, data: Any, handler: ModelWrapValidatorHandler[ShardConfig]
    ) -> ShardConfig:
        """The defaults that follow from other fields, filled in by validating again with them:
        the config is frozen and never changed once built."""
        config = handler(data)
        missing = {
            name: derive(config)
            for name, derive in DERIVED_DEFAULTS.items()
            if getattr(config, name) is None
        }
        return handler({**config.model_dump(), **missing}) if missing else config

    def editable(self) -> dict[str, Any]:
        """The fields as a YAML file or the Prefect form shows them: a derived default that still
        equals its derivation is left empty, so that changing what it follows from (say
        `max_seq_len`) derives it anew instead of keeping the old length's value."""
        fields = self.model_dump(mode="json")
        for name, derive in DERIVED_DEFAULTS.items():
            if fields[name] == derive(self):
                fields[name] = None
        return fields

    def identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"workers"})

    def shards_of(self, split: Split) -> int:
        return self.num_shards if split == "train" else int(self.num_validation_shards or 1)
