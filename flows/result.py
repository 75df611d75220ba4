"""What every stage flow returns, and what `--json` prints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bertflow.pipeline.core.store import ArtifactStore, Published


class StageResult(BaseModel):
    id: str
    kind: str
    uri: str
    cached: bool
    stats: dict[str, Any]
    upstream: dict[str, str]

    @classmethod
    def of(cls, store: ArtifactStore, published: Published) -> StageResult:
        m = published.manifest
        return cls(
            id=m.id,
            kind=m.kind,
            uri=store.uri(m.id),
            cached=published.cached,
            stats=m.stats,
            upstream=m.upstream,
        )
