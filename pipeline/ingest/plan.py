"""What an ingest run will read and the id of the corpus it will make: the sources resolved and
fingerprinted, cheap enough to run before every cache check. Apart from `stage.py`, which does
the reading and writing, so that a cached ingest loads none of the readers or Arrow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bertflow.pipeline.core.literals import Split
from bertflow.pipeline.core.manifest import InputFingerprint, artifact_id
from bertflow.pipeline.ingest.config import IngestConfig
from bertflow.pipeline.ingest.file_types import COMPRESSIONS
from bertflow.pipeline.ingest.sources import SkippedFile, SourceFile, fingerprint, resolve_sources

# How much bigger text gets when decompressed: only used to size output files.
EXPANSION = {"gzip": 3.0, "bz2": 4.0, "xz": 4.0, "zstd": 3.0, None: 1.0}


@dataclass(frozen=True)
class IngestPlan:
    """What an ingest run will read and the id of the corpus it will make."""

    config: IngestConfig
    files: list[SourceFile]
    skipped: list[SkippedFile]
    inputs: list[InputFingerprint]
    artifact_id: str
    buckets: dict[Split, int]

    @property
    def upstream(self) -> dict[str, str]:
        return {}  # a corpus is made from raw files alone: its `inputs`


def plan_ingest(config: IngestConfig, storage_options: dict[str, Any] | None = None) -> IngestPlan:
    """Resolve and fingerprint the sources; cheap enough to run before every cache check."""
    files, skipped = resolve_sources(config.sources, config.format, storage_options)
    inputs = [fingerprint(f, storage_options) for f in files]
    corpus_id = artifact_id("corpus", config.identity(), inputs=inputs)
    return IngestPlan(config, files, skipped, inputs, corpus_id, bucket_counts(config, files))


def bucket_counts(config: IngestConfig, files: list[SourceFile]) -> dict[Split, int]:
    """How many output files each split gets, from the estimated size of the text."""
    text_bytes = sum(f.size * EXPANSION.get(_compression(f.name), 1.0) for f in files)
    target = config.target_file_mb * 1e6
    fraction = config.validation_fraction
    return {
        "train": max(1, math.ceil(text_bytes * (1 - fraction) / target)),
        "validation": max(1, math.ceil(text_bytes * fraction / target)) if fraction > 0 else 0,
    }


def _compression(name: str) -> str | None:
    return next((c for ext, c in COMPRESSIONS.items() if name.endswith(ext)), None)
