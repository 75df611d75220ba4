"""Task files, read into raw columns: the files a task plan names and their fingerprints, and
the CSV, TSV, JSON Lines and Parquet readers, strict about UTF-8, fields and columns. Values are
not checked here beyond what reading needs; every problem names the file (and line or row)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, Any, Literal

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.model.evaluation.task_data import TaskSplit
from bertflow.model.evaluation.task_spec import GlueTask
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.manifest import InputFingerprint
from bertflow.pipeline.core.store import fingerprint_file, is_local_fs

FileFormat = Literal["csv", "tsv", "jsonl", "parquet"]
FILE_EXTENSIONS: dict[FileFormat, tuple[str, ...]] = {
    "csv": (".csv",),
    "tsv": (".tsv",),
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "parquet": (".parquet", ".pq"),
}
CSV_FIELD_SIZE_LIMIT = 2**31 - 1  # csv's default (128 KiB) rejects long documents


INTEGER = re.compile(r"[+-]?\d+")
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # 'nan', 'inf' are text


LabelValue = str | int | float | bool


@dataclass(frozen=True)
class TaskFile:
    path: str  # what the filesystem opens
    name: str  # how messages say it: as the spec wrote it
    uri: str  # what the fingerprint records: absolute, stable across working directories


@dataclass(frozen=True)
class TaskPlan:
    fs: fsspec.AbstractFileSystem
    format: FileFormat  # GLUE folders are TSV
    glue_task: GlueTask | None
    default_name: str
    train: TaskFile
    evaluation: TaskFile | None  # None: the evaluation split is cut from train by seed
    evaluation_split: str
    dev: TaskFile | None = None  # a labelled dev file beside a labelled test file

    @property
    def files(self) -> list[TaskFile]:
        return [f for f in (self.train, self.evaluation, self.dev) if f is not None]


def task_file(fs: fsspec.AbstractFileSystem, path: str, name: str) -> TaskFile:
    uri = os.path.realpath(path) if is_local_fs(fs) else fs.unstrip_protocol(path)
    return TaskFile(path, name, uri)


def folder_file(
    fs: fsspec.AbstractFileSystem, files: dict[str, str], base: str, folder: str
) -> TaskFile:
    return task_file(fs, files[base], f"{folder.rstrip('/')}/{base}")


def fingerprint(fs: fsspec.AbstractFileSystem, file: TaskFile) -> InputFingerprint:
    """sha256 of a local file (task files are small enough to always hash), ETag of an object."""
    try:
        return fingerprint_file(fs, file.path, file.uri)
    except OSError as e:
        raise InputError(f"{file.name}: cannot read ({e})") from None


@dataclass(frozen=True)
class Columns:
    """Column names to read. `pair` None: no pair column; not `pair_required`: use it if present."""

    text: str
    pair: str | None
    label: str
    pair_required: bool = True

    def resolve(self, file: str, available: list[str]) -> Columns:
        """The columns as they are in `file`, or InputError for one that is missing."""
        pair = self.pair if self.pair in available else None
        wanted = [self.text, self.label] + ([self.pair] if self.pair and self.pair_required else [])
        for column in wanted:
            if column not in available:
                listed = ", ".join(repr(c) for c in available) or "none"
                raise InputError(f"{file}: no column {column!r} (columns: {listed})")
        return Columns(self.text, pair, self.label)


@dataclass(frozen=True)
class RawSplit:
    """One split's columns as read: values not yet checked (None where a row lacks one)."""

    file: str
    source: str
    columns: Columns  # resolved: `pair` is set iff `pairs` is
    texts: list[Any]
    pairs: list[Any] | None
    labels: list[Any]
    rows: list[int]  # each row's 1-based line, or (Parquet) its 0-based row index
    row_style: Literal["line", "row"]
    spelled_numbers: bool  # CSV/TSV: every value is text, so numeric labels are spelled out

    def where(self, i: int) -> str:
        """Row `i` as messages say it: `file:LINE` or `file row INDEX`."""
        n = self.rows[i]
        return f"{self.file}:{n}" if self.row_style == "line" else f"{self.file} row {n}"

    def take(self, index: np.ndarray, source: str) -> RawSplit:
        pick = index.tolist()
        return replace(
            self,
            source=source,
            texts=[self.texts[i] for i in pick],
            pairs=None if self.pairs is None else [self.pairs[i] for i in pick],
            labels=[self.labels[i] for i in pick],
            rows=[self.rows[i] for i in pick],
        )


@dataclass(frozen=True)
class _Dialect:
    delimiter: str
    quoting: int
    exact_width: bool  # every row must have the header's number of fields


GLUE_DIALECT = _Dialect("\t", csv.QUOTE_NONE, exact_width=False)  # GLUE texts hold bare quotes


# Other CSV/TSV files are read as the csv module and pandas write them: a field holding the
# delimiter or a quote is quoted. The exact width check catches files that were not.
_DIALECTS: dict[str, _Dialect] = {
    "csv": _Dialect(",", csv.QUOTE_MINIMAL, exact_width=True),
    "tsv": _Dialect("\t", csv.QUOTE_MINIMAL, exact_width=True),
}


def read_file(
    fs: fsspec.AbstractFileSystem, file: TaskFile, fmt: FileFormat, columns: Columns
) -> RawSplit:
    if fmt == "jsonl":
        return _read_jsonl(fs, file, columns)
    if fmt == "parquet":
        return _read_parquet(fs, file, columns)
    return read_delimited(fs, file, _DIALECTS[fmt], columns)


@contextlib.contextmanager
def open_text(fs: fsspec.AbstractFileSystem, file: TaskFile) -> Iterator[IO[str]]:
    """The file as strictly decoded UTF-8 (a BOM is dropped); decoding errors name the file."""
    try:
        with (
            fs.open(file.path, "rb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="") as text,
        ):
            yield text
    except UnicodeDecodeError as e:
        raise InputError(f"{file.name}: not valid UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise InputError(f"{file.name}: cannot read ({e})") from None


def csv_reader(text: IO[str], dialect: _Dialect) -> Any:
    csv.field_size_limit(CSV_FIELD_SIZE_LIMIT)
    return csv.reader(text, delimiter=dialect.delimiter, quoting=dialect.quoting, strict=True)


def read_delimited(
    fs: fsspec.AbstractFileSystem,
    file: TaskFile,
    dialect: _Dialect,
    columns: Columns,
    headerless: tuple[str, ...] | None = None,
) -> RawSplit:
    """CSV/TSV with a header row, or (`headerless` names the columns) without one."""
    with open_text(fs, file) as text:
        reader = csv_reader(text, dialect)
        try:
            first = next(reader, None)
            if first is None:
                raise InputError(f"{file.name}: the file is empty (no header row)")
            data_rows: list[tuple[int, list[str]]] = []
            if headerless is not None and not looks_like_header(first, columns):
                header = list(headerless)
                data_rows.append((reader.line_num, first))
            else:
                header = first
            resolved = columns.resolve(file.name, header)
            data_rows.extend((reader.line_num, row) for row in reader if row)
        except csv.Error as e:
            raise InputError(f"{file.name}:{reader.line_num}: malformed row ({e})") from None
    if dialect.exact_width:
        for line, row in data_rows:
            if len(row) != len(header):
                raise InputError(
                    f"{file.name}:{line}: {len(row)} fields, but the header has {len(header)}"
                )
    return _delimited_split(file, header, resolved, data_rows)


def _delimited_split(
    file: TaskFile, header: list[str], columns: Columns, data_rows: list[tuple[int, list[str]]]
) -> RawSplit:
    def column(name: str) -> list[str | None]:
        at = header.index(name)
        return [row[at] if at < len(row) else None for _, row in data_rows]

    return RawSplit(
        file=file.name,
        source=file.name,
        columns=columns,
        texts=column(columns.text),
        pairs=column(columns.pair) if columns.pair else None,
        labels=column(columns.label),
        rows=[line for line, _ in data_rows],
        row_style="line",
        spelled_numbers=True,
    )


def looks_like_header(row: list[str], columns: Columns) -> bool:
    """A header row names the text or label column (CoLA's test.tsv has one, train.tsv not)."""
    return columns.text in row or columns.label in row


def _read_jsonl(fs: fsspec.AbstractFileSystem, file: TaskFile, columns: Columns) -> RawSplit:
    """One JSON object per line; blank lines are skipped. A key missing from a line is None."""
    seen: dict[str, None] = {}  # every key, in order of first appearance
    wanted = [c for c in (columns.text, columns.pair, columns.label) if c]
    values: dict[str, list[Any]] = {c: [] for c in wanted}
    lines: list[int] = []
    with open_text(fs, file) as text:
        for line_no, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{file.name}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise InputError(f"{file.name}:{line_no}: a JSON {kind}, not an object")
            seen.update(dict.fromkeys(record))
            for c in wanted:
                values[c].append(record.get(c))
            lines.append(line_no)
    resolved = columns.resolve(file.name, list(seen))
    return RawSplit(
        file=file.name,
        source=file.name,
        columns=resolved,
        texts=values[resolved.text],
        pairs=values[resolved.pair] if resolved.pair else None,
        labels=values[resolved.label],
        rows=lines,
        row_style="line",
        spelled_numbers=False,
    )


def _read_parquet(fs: fsspec.AbstractFileSystem, file: TaskFile, columns: Columns) -> RawSplit:
    try:
        with fs.open(file.path, "rb") as f:
            parquet = pq.ParquetFile(f)
            resolved = columns.resolve(file.name, parquet.schema_arrow.names)
            wanted = [c for c in (resolved.text, resolved.pair, resolved.label) if c]
            table = parquet.read(columns=wanted)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{file.name}: not a readable Parquet file ({e})") from None
    return RawSplit(
        file=file.name,
        source=file.name,
        columns=resolved,
        texts=table.column(resolved.text).to_pylist(),
        pairs=table.column(resolved.pair).to_pylist() if resolved.pair else None,
        labels=table.column(resolved.label).to_pylist(),
        rows=list(range(table.num_rows)),
        row_style="row",
        spelled_numbers=False,
    )


def require_rows(raw: RawSplit, split: str) -> None:
    if not raw.labels:
        raise InputError(f"{raw.file}: the {split} split has no rows")


def _checked_texts(raw: RawSplit, values: list[Any], column: str) -> list[str]:
    """`values` as strings, or InputError at the first missing, empty or non-text one."""
    for i, value in enumerate(values):
        if not isinstance(value, str):
            if value is None:
                raise InputError(f"{raw.where(i)}: missing text in column {column!r}")
            kind = type(value).__name__
            raise InputError(f"{raw.where(i)}: column {column!r} holds {kind} {value!r}, not text")
        if not value.strip():
            raise InputError(f"{raw.where(i)}: empty text in column {column!r}")
    return values


def task_split(raw: RawSplit, labels: np.ndarray) -> TaskSplit:
    texts = _checked_texts(raw, raw.texts, raw.columns.text)
    pairs = None
    if raw.pairs is not None and raw.columns.pair is not None:
        pairs = _checked_texts(raw, raw.pairs, raw.columns.pair)
    return TaskSplit(texts=texts, pairs=pairs, labels=labels, source=raw.source)
