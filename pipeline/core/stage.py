"""The shape every stage shares.

A stage is a typed, frozen config; a plan, made by `plan_<stage>(store, upstream ids, config)`,
that checks what can be checked and fixes the artifact id (a hash of the config, the upstream ids
and the inputs' fingerprints) before any work; and `build_and_publish(store, plan, callbacks,
flow_run_id)`, which makes the artifact in a staging folder and publishes it with its manifest.
`cached_or_built` is the one place that chooses between finding and building: the plain entry
points (`ingest`, `make_tokenizer`, `make_shards`, `run_evaluation`) use it directly, and every
flow through `flows/stage.py`, which adds the Prefect records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bertflow.pipeline.core.manifest import InputFingerprint
from bertflow.pipeline.core.store import ArtifactStore, Published


class Plan(Protocol):
    """What every stage's plan says before any work."""

    @property
    def artifact_id(self) -> str: ...

    @property
    def upstream(self) -> dict[str, str]:
        """The artifacts it is made from, by role (`{"corpus": ..., "tokenizer": ...}`)."""
        ...

    @property
    def inputs(self) -> list[InputFingerprint]:
        """The raw files it reads, outside the store (the ingest's sources, task files)."""
        ...


def cached_or_built(store: ArtifactStore, plan: Plan, build: Callable[[], Published]) -> Published:
    """The planned artifact from the store when it is there, else what `build` publishes."""
    existing = store.get(plan.artifact_id)
    return Published(existing, cached=True) if existing is not None else build()
