"""What a file's name says: its format and its compression (`notes.jsonl.gz`: JSON Lines, gzip).
Apart from `formats.py`, which reads the files, so that listing and planning inputs (a cached
ingest) loads none of the readers."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from bertflow.pipeline.core.literals import Format

Compression = Literal["gzip", "bz2", "xz", "zstd"]

COMPRESSIONS: dict[str, Compression] = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
FORMAT_SUFFIXES: dict[str, Format] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xml": "wikipedia",  # MediaWiki dumps: enwiki-20240101-pages-articles1.xml.bz2
}


def _suffixes(name: str) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None) of a file name, lower-cased."""
    path = PurePosixPath(name.lower())
    if path.suffix in COMPRESSIONS:
        return path.with_suffix("").suffix, path.suffix
    return path.suffix, None


def detect_format(name: str) -> Format | None:
    """The format a file name announces, looking past one compression suffix; None if unknown."""
    return FORMAT_SUFFIXES.get(_suffixes(name)[0])


def compression_of(name: str) -> Compression | None:
    suffix = _suffixes(name)[1]
    return COMPRESSIONS[suffix] if suffix else None
