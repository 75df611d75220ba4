"""Reading raw corpus files into documents: format detection, decompression, decoding, parsing.

Every reader streams: memory stays bounded by one document (or one Parquet batch), except that a
text or markdown file read as a single document is held whole. Problems with a single record are
counted in a `ReadTally` and skipped; problems with the whole file raise `InputError`.
"""

from __future__ import annotations

import abc
import bz2
import gzip
import io
import json
import lzma
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, BinaryIO, get_args

import ijson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from markdown_it import MarkdownIt
from markdown_it.token import Token

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import DocSplit
from bertflow.pipeline.ingest.file_types import (
    Compression,
    Format,
    compression_of,
    detect_format,  # noqa: F401 (re-exported from here)
)
from bertflow.pipeline.ingest.raw import RawDocument, ReadTally
from bertflow.pipeline.ingest.wikipedia import iter_wiki_documents

_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20
NOT_TEXT_SAMPLE = 1 << 16  # bytes read before the share of undecodable ones is judged
NOT_TEXT_MIN_BAD = 16  # fewer bad sequences never make a file "not text" (a short note in Latin-1)
PARQUET_BATCH_ROWS = 1024


@dataclass
class ReaderOptions:
    """How to find documents in a file."""

    text_field: str = "text"
    """Field holding the text in JSON records and the column in Parquet files."""
    doc_split: DocSplit = "file"
    """Text and markdown files: one document per file, per blank-line-separated block, or between
    separator lines."""
    doc_separator: str | None = None
    """With doc_split="separator": a line equal to this (both stripped) ends a document."""
    max_undecodable_fraction: float = 0.01
    """A file with a larger share of bytes that are not UTF-8 is refused as not text."""

    def __post_init__(self) -> None:
        if not self.text_field:
            raise ValueError("text_field must not be empty")
        if self.doc_split not in get_args(DocSplit):
            raise ValueError(
                f"doc_split must be one of {get_args(DocSplit)}, got {self.doc_split!r}"
            )
        if self.doc_split == "separator" and not (self.doc_separator or "").strip():
            raise ValueError('doc_separator must be a non-blank line when doc_split="separator"')


# --- byte streams -------------------------------------------------------------------------------


class _ChunkReader(io.RawIOBase):
    """A readable raw stream over the chunks that `_next_chunk` returns (b"" at the end)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunk = memoryview(b"")

    @abc.abstractmethod
    def _next_chunk(self) -> bytes:
        """The next piece of the stream, or b"" at its end."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunk:
            chunk = self._next_chunk()
            if not chunk:
                return 0
            self._chunk = memoryview(chunk)
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n


class _TrackedSource:
    """The caller's stream, noting whether a read failed: a network error surfacing through a
    decompressor must stay a (retryable) I/O error, not be reported as a corrupt file."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.failed = False

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except BaseException:
            self.failed = True
            raise


class _ZstdFrames(_ChunkReader):
    """Zstandard frames one after another. Unlike `stream_reader`, which ends silently, a stream
    cut off inside a frame is an error."""

    def __init__(self, source: _TrackedSource) -> None:
        super().__init__()
        self._source = source
        self._frame: Any = None  # the decompressor of the current frame; None before the first

    def _next_chunk(self) -> bytes:
        while compressed := self._source.read(CHUNK_BYTES):
            if out := self._decompress(compressed):
                return out
        if self._frame is not None and not self._frame.eof:
            raise EOFError("stream ended inside a frame")
        return b""

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame is None or self._frame.eof:
                self._frame = zstandard.ZstdDecompressor().decompressobj()
            out.append(self._frame.decompress(data))
            data = self._frame.unused_data if self._frame.eof else b""
        return b"".join(out)


_DECOMPRESSORS: dict[Compression, Callable[[_TrackedSource], Any]] = {
    "gzip": lambda source: gzip.GzipFile(fileobj=source),
    "bz2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
    "zstd": _ZstdFrames,
}
_CORRUPTION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


class _Decompressed(_ChunkReader):
    """Decompressed bytes; a damaged stream raises InputError naming the file."""

    def __init__(self, source: BinaryIO, compression: Compression, name: str) -> None:
        super().__init__()
        self._source = _TrackedSource(source)
        self._inner = _DECOMPRESSORS[compression](self._source)
        self._what = f"{name}: corrupt {compression} stream"

    def _next_chunk(self) -> bytes:
        try:
            return self._inner.read(CHUNK_BYTES)
        except _CORRUPTION_ERRORS as exc:
            if self._source.failed:
                raise
            raise InputError(f"{self._what} ({exc})") from exc


def _open_decompressed(stream: BinaryIO, name: str) -> BinaryIO:
    compression = compression_of(name)
    if compression is None:
        return stream
    return io.BufferedReader(_Decompressed(stream, compression, name), CHUNK_BYTES)


def _utf8_complete(data: bytes) -> int:
    """Length of `data` without a trailing, possibly incomplete, UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: nothing pending
            return len(data)
        if byte >= 0xC0:  # lead byte of a 2-, 3- or 4-byte sequence
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= needed else len(data) - back
    return len(data)


def _repair_utf8(data: bytes) -> tuple[bytes, int]:
    """(`data` if it is valid UTF-8, else re-encoded with U+FFFD for each bad sequence; how many
    bad sequences there were)."""
    try:
        data.decode("utf-8")
        return data, 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        return text.encode("utf-8"), text.count("\ufffd") - data.count("\ufffd".encode())


class _Utf8Repaired(_ChunkReader):
    """Valid UTF-8 without a leading BOM: bad sequences become U+FFFD, counted in the tally.

    What is not text is refused, naming the file: a NUL byte (no text format holds one; an
    executable or an image does), or more than `max_undecodable` of the bytes read so far not
    UTF-8 (another encoding, or binary data), judged once NOT_TEXT_SAMPLE bytes are in or at
    the end, and only from NOT_TEXT_MIN_BAD bad sequences on."""

    def __init__(
        self, source: BinaryIO, tally: ReadTally, name: str, max_undecodable: float
    ) -> None:
        super().__init__()
        self._source = source
        self._tally = tally
        self._name = name
        self._max_undecodable = max_undecodable
        self._carry = b""  # held back: a sequence cut by the chunk end, or a too short start
        self._started = False
        self._bytes = self._undecodable = 0

    def _next_chunk(self) -> bytes:
        # Loops because a short read may leave nothing complete to return, and b"" means the end.
        while True:
            read = self._source.read(CHUNK_BYTES)
            data = self._carry + read
            if not self._started:
                if read and len(data) < len(_BOM):
                    self._carry = data
                    continue
                self._started = True
                data = data.removeprefix(_BOM)
            cut = _utf8_complete(data) if read else len(data)
            complete, self._carry = data[:cut], data[cut:]
            if complete or not read:
                return self._checked(complete, end=not read)

    def _checked(self, data: bytes, end: bool) -> bytes:
        nul = data.find(b"\0")
        if nul >= 0:
            raise InputError(
                f"{self._name}: not text: a NUL byte at byte {self._bytes + nul:,} (a binary "
                f"file, or UTF-16/32 text: convert it to UTF-8)"
            )
        repaired, bad = _repair_utf8(data)
        self._tally.replaced_chars += bad
        self._undecodable += bad
        self._bytes += len(data)
        if (end or self._bytes >= NOT_TEXT_SAMPLE) and self._bytes:
            share = self._undecodable / self._bytes
            if share > self._max_undecodable and self._undecodable >= NOT_TEXT_MIN_BAD:
                raise InputError(
                    f"{self._name}: not UTF-8 text: {self._undecodable:,} of the first "
                    f"{self._bytes:,} bytes cannot be decoded ({share:.1%}, more than "
                    f"max_undecodable_fraction {self._max_undecodable:.1%}); convert it to UTF-8 "
                    f"(iconv -f latin1 -t utf-8, for one), or raise the limit"
                )
        return repaired


def _repaired(
    stream: BinaryIO, tally: ReadTally, name: str, options: ReaderOptions
) -> io.BufferedReader:
    checked = _Utf8Repaired(stream, tally, name, options.max_undecodable_fraction)
    return io.BufferedReader(checked, CHUNK_BYTES)


def _text_stream(
    stream: BinaryIO, tally: ReadTally, name: str, options: ReaderOptions
) -> io.TextIOWrapper:
    # Only "\n" ends a line: JSON strings may hold a raw U+2028, and "\r\n" is stripped later.
    repaired = _repaired(stream, tally, name, options)
    return io.TextIOWrapper(repaired, encoding="utf-8", newline="\n")


# --- records ------------------------------------------------------------------------------------

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _record_text(record: object, text_field: str) -> tuple[str | None, str]:
    """(text, "") for a good record, else (None, why it is malformed)."""
    if not isinstance(record, dict):
        return None, f"record is {_json_type(record)}, not an object"
    if text_field not in record:
        return None, f"missing text field {text_field!r}"
    text = record[text_field]
    if not isinstance(text, str):
        return None, f"text field {text_field!r} is {_json_type(text)}, not a string"
    return text, ""


def _record_document(
    record: object, location: str, options: ReaderOptions, tally: ReadTally
) -> RawDocument | None:
    tally.records += 1
    text, reason = _record_text(record, options.text_field)
    if text is None:
        tally.add_malformed(location, reason)
        return None
    return RawDocument(text, location) if text.strip() else None


def _read_jsonl(
    stream: BinaryIO, name: str, options: ReaderOptions, tally: ReadTally
) -> Iterator[RawDocument]:
    for number, line in enumerate(_text_stream(stream, tally, name, options), start=1):
        if not line.strip():
            continue
        location = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            tally.records += 1
            tally.add_malformed(location, f"invalid JSON ({exc.msg}: column {exc.colno})")
            continue
        if doc := _record_document(record, location, options, tally):
            yield doc


def _skip_whitespace(stream: io.BufferedReader) -> bytes:
    """Consume leading whitespace; return the next byte without consuming it (b"" at the end)."""
    while head := stream.peek(1):
        if stripped := head.lstrip():
            return stripped[:1]
        stream.read(len(head))
    return b""


def _read_json(
    stream: BinaryIO, name: str, options: ReaderOptions, tally: ReadTally
) -> Iterator[RawDocument]:
    repaired = _repaired(stream, tally, name, options)
    # ijson quietly yields nothing for a top-level object: say so instead.
    first = _skip_whitespace(repaired)
    if first != b"[":
        found = repr(first.decode("utf-8", "replace")) if first else "an empty file"
        raise InputError(f"{name}: expected a JSON array of records, found {found}")
    try:
        for index, record in enumerate(ijson.items(repaired, "item")):
            if doc := _record_document(record, f"{name}[{index}]", options, tally):
                yield doc
    except ijson.JSONError as exc:
        message = " ".join(str(exc).split())  # yajl draws a multi-line pointer
        raise InputError(f"{name}: invalid JSON ({message})") from exc


# --- Parquet ------------------------------------------------------------------------------------


def _seekable_file(stream: BinaryIO, compressed: bool, spool: IO[bytes]) -> IO[bytes]:
    """Parquet's footer is at the end: a decompressed or one-way stream is copied to disk first."""
    if not compressed and stream.seekable():
        return stream
    shutil.copyfileobj(stream, spool, CHUNK_BYTES)
    spool.seek(0)
    return spool


def _parquet_texts(parquet: pq.ParquetFile, name: str, column: str) -> Iterator[str | None]:
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise InputError(f"{name}: no column {column!r}; columns are {schema.names}")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise InputError(f"{name}: column {column!r} is {kind}, not a string column")
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[column]):
        yield from batch.column(0).to_pylist()


def _read_parquet(
    stream: BinaryIO, name: str, options: ReaderOptions, tally: ReadTally
) -> Iterator[RawDocument]:
    with tempfile.TemporaryFile() as spool:
        source = _seekable_file(stream, compression_of(name) is not None, spool)
        try:
            parquet = pq.ParquetFile(source)
            texts = enumerate(_parquet_texts(parquet, name, options.text_field))
            for index, text in texts:
                tally.records += 1
                if text is None:
                    tally.add_malformed(
                        f"{name}[{index}]", f"text field {options.text_field!r} is null"
                    )
                elif text.strip():
                    yield RawDocument(text, f"{name}[{index}]")
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{name}: not a readable Parquet file ({exc})") from exc


# --- text and markdown --------------------------------------------------------------------------

# CommonMark plus GFM tables, so that a table is recognised and dropped instead of read as prose.
_MARKDOWN = MarkdownIt("commonmark").enable("table")
_SKIPPED_BLOCKS = {"heading_open": "heading_close", "table_open": "table_close"}
_INLINE_TEXT = {"text": None, "code_inline": None, "softbreak": " ", "hardbreak": "\n"}


def _inline_text(children: Iterable[Token]) -> str:
    """Text of an inline run: words, emphasis, link text, inline code; no images or HTML."""
    parts = []
    for token in children:
        if token.type in _INLINE_TEXT:
            parts.append(_INLINE_TEXT[token.type] or token.content)
    return "".join(parts)


def markdown_to_text(md: str) -> str:
    """Plain text of paragraphs and list items, one block per paragraph, joined by blank lines.

    Headings, tables, code blocks and raw HTML blocks are dropped: they are not running prose.
    """
    blocks, closing = [], None
    for token in _MARKDOWN.parse(md):
        if closing is not None:
            closing = None if token.type == closing else closing
        elif token.type in _SKIPPED_BLOCKS:
            closing = _SKIPPED_BLOCKS[token.type]
        elif token.type == "inline" and (text := _inline_text(token.children or []).strip()):
            blocks.append(text)
    return "\n\n".join(blocks)


def _split_documents(lines: Iterable[str], options: ReaderOptions) -> Iterator[str]:
    """Documents of a text file split at blank-line runs or separator lines (whole lines kept)."""
    separator = (options.doc_separator or "").strip()
    current: list[str] = []
    for line in lines:
        stripped = line.strip()
        ends = stripped == separator if options.doc_split == "separator" else not stripped
        if not ends:
            current.append(line)
        elif current:
            yield "".join(current)
            current = []
    if current:
        yield "".join(current)


def _read_text(
    stream: BinaryIO, name: str, options: ReaderOptions, tally: ReadTally, markdown: bool = False
) -> Iterator[RawDocument]:
    text_stream = _text_stream(stream, tally, name, options)
    if options.doc_split == "file":
        documents: Iterable[tuple[str, str]] = [(name, text_stream.read())]
    else:
        texts = _split_documents(text_stream, options)
        documents = ((f"{name}#{n}", text) for n, text in enumerate(texts, start=1))
    for location, text in documents:
        tally.records += 1
        text = markdown_to_text(text) if markdown else text
        if text.strip():
            yield RawDocument(text, location)


def _read_markdown(
    stream: BinaryIO, name: str, options: ReaderOptions, tally: ReadTally
) -> Iterator[RawDocument]:
    return _read_text(stream, name, options, tally, markdown=True)


def _read_wikipedia(
    stream: BinaryIO, name: str, options: ReaderOptions, tally: ReadTally
) -> Iterator[RawDocument]:
    repaired = _repaired(stream, tally, name, options)
    return iter_wiki_documents(repaired, name, tally)


Reader = Callable[[BinaryIO, str, ReaderOptions, ReadTally], Iterator[RawDocument]]
_READERS: dict[Format, Reader] = {
    "text": _read_text,
    "markdown": _read_markdown,
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _read_parquet,
    "wikipedia": _read_wikipedia,
}


def read_documents(
    stream: BinaryIO, name: str, fmt: Format, options: ReaderOptions, tally: ReadTally
) -> Iterator[RawDocument]:
    """Documents of one raw file; `stream` is its bytes as stored, compressed or not (by `name`).

    Malformed records are skipped and counted in `tally`; a file that cannot be read as `fmt`
    raises InputError naming it.
    """
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(_READERS)}")
    yield from _READERS[fmt](_open_decompressed(stream, name), name, options, tally)
