"""Artifact manifests and content-addressed artifact ids.

An artifact's id is a hash of everything that made it: its kind, the resolved config fields that
shape its output, the ids of its upstream artifacts, fingerprints of its raw inputs, and the format
version of its kind. The manifest, written last, records the same plus what came out of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"

# Bump a kind's version whenever its files change meaning: old ids then stop matching.
FORMAT_VERSIONS: dict[str, int] = {
    "corpus": 1,
    "tokenizer": 1,
    "shards": 2,  # 2: masked counts rounded at random (static masks)
    "model": 2,  # 2: trained with those counts (dynamic masks)
    "evaluation": 2,  # 2: intrinsic metrics measured with them
}

ID_HEX_CHARS = 20  # 80 bits: collisions are not a practical concern for one team's store
_HEX_DIGEST = re.compile(f"[0-9a-f]{{{ID_HEX_CHARS}}}")


class FileEntry(BaseModel):
    """One file of an artifact, relative to the artifact's folder."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int
    sha256: str


class InputFingerprint(BaseModel):
    """A raw input as it was when the artifact was made.

    `fingerprint` is `sha256:<hex>` (content), `etag:<tag>` (object storage) or
    `stat:<size>:<mtime_ns>` (large local files, where hashing would cost more than the stage).
    """

    model_config = ConfigDict(frozen=True)

    uri: str
    size: int | None = None
    fingerprint: str


class Producer(BaseModel):
    bertflow_version: str
    git_commit: str | None = None
    prefect_flow_run_id: str | None = None


class Manifest(BaseModel):
    """What `manifest.json` holds. Its presence is what makes an artifact exist."""

    id: str
    kind: str
    format_version: int
    created: str
    config: dict[str, Any]
    upstream: dict[str, str] = Field(default_factory=dict, description="role -> artifact id")
    inputs: list[InputFingerprint] = Field(default_factory=list)
    files: list[FileEntry] = Field(default_factory=list)
    layout: dict[str, Any] = Field(
        default_factory=dict, description="kind-specific map of files, e.g. splits -> file names"
    )
    stats: dict[str, Any] = Field(default_factory=dict)
    summary: str = Field("", description="one line on what it holds, by the stage that made it")
    producer: Producer

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def artifact_id(
    kind: str,
    config: dict[str, Any],
    upstream: dict[str, str] | None = None,
    inputs: list[InputFingerprint] | None = None,
) -> str:
    """`<kind>-<hash>`: the same kind, config, upstream ids and inputs give the same id."""
    if kind not in FORMAT_VERSIONS:
        raise ValueError(f"unknown artifact kind {kind!r}; known: {sorted(FORMAT_VERSIONS)}")
    identity = {
        "kind": kind,
        "format_version": FORMAT_VERSIONS[kind],
        "config": config,
        "upstream": upstream or {},
        "inputs": [i.model_dump(mode="json") for i in inputs or []],
    }
    digest = hashlib.sha256(canonical_json(identity).encode()).hexdigest()
    return f"{kind}-{digest[:ID_HEX_CHARS]}"


def kind_of(artifact_id: str) -> str:
    """The kind an id names (`corpus-3fa…` -> `corpus`), or ValueError for a malformed id."""
    kind, sep, digest = artifact_id.partition("-")
    if not sep or kind not in FORMAT_VERSIONS or not _HEX_DIGEST.fullmatch(digest):
        raise ValueError(
            f"{artifact_id!r} is not an artifact id (expected <kind>-<{ID_HEX_CHARS} hex chars>"
            f" with kind one of {sorted(FORMAT_VERSIONS)})"
        )
    return kind


def sha256_stream(f: IO[bytes], chunk_bytes: int = 1 << 20) -> str:
    """sha256 of an open binary file (local or fsspec), read in chunks."""
    digest = hashlib.sha256()
    while chunk := f.read(chunk_bytes):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f, chunk_bytes)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@functools.cache
def bertflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bertflow")
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def git_commit() -> str | None:
    """The commit of the bertflow checkout this code runs from, when it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
