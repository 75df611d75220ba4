"""Labelled downstream (fine-tuning) tasks: GLUE folders, CSV, TSV, JSON Lines and Parquet files.

A `TaskSpec` names a task: a file or a folder, local or behind an fsspec URL (`s3://...`), or
`demo-era`, the built-in task on speeches the demo corpus holds out (`demo_task.py`). A folder
carries its own splits (GLUE's TSVs, or `train.<ext>` beside `test|dev|validation.<ext>`); a single
file is split by seed. `read_task` returns plain lists and arrays, with the fingerprint of every
file it read so that an artifact made from a task changes id when the task's data changes.

Every problem with the data raises `InputError` naming the file (and line or row) and what is wrong:
a task is small enough that failing on the first bad row is cheaper than guessing what was meant.
Files are streamed, so a large GLUE task (MNLI's train.tsv is ~300 MB) costs only its used columns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import IO, Any, Literal, get_args

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.model.evaluation.task_spec import GlueTask, TaskSpec  # TaskSpec re-exported from here
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Problem
from bertflow.pipeline.core.manifest import InputFingerprint, sha256_file
from bertflow.pipeline.core.store import fingerprint_file, is_local_fs
from bertflow.pipeline.ingest import demo_task

FileFormat = Literal["csv", "tsv", "jsonl", "parquet"]
LabelKind = Literal["string", "number", "boolean"]
LabelValue = str | int | float | bool

GLUE_TASKS: tuple[GlueTask, ...] = get_args(GlueTask)
FILE_EXTENSIONS: dict[FileFormat, tuple[str, ...]] = {
    "csv": (".csv",),
    "tsv": (".tsv",),
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "parquet": (".parquet", ".pq"),
}
EVALUATION_SPLITS = ("test", "dev", "validation")  # a folder's evaluation file, preferred first
CSV_FIELD_SIZE_LIMIT = 2**31 - 1  # csv's default (128 KiB) rejects long documents
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # 'nan', 'inf' are text


@dataclass(frozen=True, eq=False)  # eq=False: a generated __eq__ cannot compare arrays
class TaskSplit:
    """One split of a task: texts, optional second texts, labels, all of one length."""

    texts: list[str]
    pairs: list[str] | None  # second sentences, or None for single-sentence tasks
    labels: np.ndarray  # (N,) int64 class ids (classification) or float64 targets (regression)
    source: str  # the file it came from, with " (seeded split)" when split by seed

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, eq=False)
class TaskData:
    """A task as read: both splits, what the labels mean, and which metrics to report."""

    name: str
    problem: Problem
    label_names: list[str] | None  # classification: class names, index = class id
    metrics: tuple[str, ...]  # primary first
    train: TaskSplit
    evaluation: TaskSplit  # the split the reported metrics come from
    evaluation_split: str  # "test", "dev" or "validation"
    split_origin: Literal["files", "seeded", "by-speech"]
    inputs: list[InputFingerprint]  # every file read
    dev: TaskSplit | None = None  # the task's own dev split, beside a labelled test split

    @property
    def num_labels(self) -> int:
        """Outputs of the task's head: one per class, or one regression target."""
        return len(self.label_names) if self.label_names is not None else 1


@dataclass(frozen=True)
class GlueLayout:
    """Where a GLUE task's TSVs keep their columns, and what their labels mean."""

    text: str
    pair: str | None
    label: str
    label_names: tuple[str, ...] | None  # fixed class order; None: regression
    metrics: tuple[str, ...]
    headerless: tuple[str, ...] | None = None  # column names of files without a header row
    dev_file: str = "dev.tsv"
    test_file: str = "test.tsv"


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")
GLUE_LAYOUTS: dict[GlueTask, GlueLayout] = {
    "sst2": GlueLayout("sentence", None, "label", _BINARY, ("accuracy",)),
    "cola": GlueLayout(
        "sentence",
        None,
        "label",
        _BINARY,
        ("mcc", "accuracy"),
        headerless=("source", "label", "original_mark", "sentence"),
    ),
    "mrpc": GlueLayout("#1 String", "#2 String", "Quality", _BINARY, ("f1", "accuracy")),
    "rte": GlueLayout("sentence1", "sentence2", "label", _ENTAILMENT, ("accuracy",)),
    "wnli": GlueLayout("sentence1", "sentence2", "label", _BINARY, ("accuracy",)),
    "qnli": GlueLayout("question", "sentence", "label", _ENTAILMENT, ("accuracy",)),
    "stsb": GlueLayout("sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    "qqp": GlueLayout("question1", "question2", "is_duplicate", _BINARY, ("f1", "accuracy")),
    "mnli": GlueLayout(
        "sentence1",
        "sentence2",
        "gold_label",
        ("contradiction", "entailment", "neutral"),
        ("accuracy",),
        dev_file="dev_matched.tsv",
        test_file="test_matched.tsv",
    ),
}


def task_inputs(spec: TaskSpec) -> list[InputFingerprint]:
    """Fingerprints of the files `read_task(spec)` reads, without parsing them (to name an
    artifact before any work)."""
    if spec.path == demo_task.DEMO_TASK:
        return _demo_inputs()
    plan = _plan(spec)
    return [_fingerprint(plan.fs, f) for f in plan.files]


def read_task(spec: TaskSpec) -> TaskData:
    """Read and check a task's splits; every bad value fails here, before any training."""
    if spec.path == demo_task.DEMO_TASK:
        return _read_demo_task(spec)
    plan = _plan(spec)
    inputs = [_fingerprint(plan.fs, f) for f in plan.files]
    if plan.glue_task is not None:
        return _read_glue(spec, plan, plan.glue_task, inputs)
    return _read_files(spec, plan, inputs)


def _demo_inputs() -> list[InputFingerprint]:
    return [
        InputFingerprint(
            uri=f"demo://sotu/{p.name}",
            size=p.stat().st_size,
            fingerprint="sha256:" + sha256_file(p),
        )
        for p in demo_task.task_speeches()
    ]


def _read_demo_task(spec: TaskSpec) -> TaskData:
    """`demo-era`: the era of a held-out speech's paragraph, fine-tuned and tested on different
    speeches. The spec's file options do not apply; only `name` (and `seeds`) do."""
    train, test = demo_task.era_splits()
    names = [label for _, label in demo_task.ERAS]

    def split(examples: demo_task.EraExamples, which: str) -> TaskSplit:
        labels = np.array([names.index(label) for label in examples.labels], dtype=np.int64)
        return TaskSplit(examples.texts, None, labels, f"{demo_task.DEMO_TASK} ({which} speeches)")

    return TaskData(
        name=spec.name or demo_task.DEMO_TASK,
        problem="classification",
        label_names=names,
        metrics=("accuracy", "macro_f1"),
        train=split(train, "train"),
        evaluation=split(test, "test"),
        evaluation_split="test",
        split_origin="by-speech",
        inputs=_demo_inputs(),
    )


# --- Planning: which files a spec names ---------------------------------------------------------


@dataclass(frozen=True)
class _TaskFile:
    path: str  # what the filesystem opens
    name: str  # how messages say it: as the spec wrote it
    uri: str  # what the fingerprint records: absolute, stable across working directories


@dataclass(frozen=True)
class _Plan:
    fs: fsspec.AbstractFileSystem
    format: FileFormat  # GLUE folders are TSV
    glue_task: GlueTask | None
    default_name: str
    train: _TaskFile
    evaluation: _TaskFile | None  # None: the evaluation split is cut from train by seed
    evaluation_split: str
    dev: _TaskFile | None = None  # a labelled dev file beside a labelled test file

    @property
    def files(self) -> list[_TaskFile]:
        return [f for f in (self.train, self.evaluation, self.dev) if f is not None]


def _plan(spec: TaskSpec) -> _Plan:
    try:
        fs, root = fsspec.core.url_to_fs(os.path.expanduser(spec.path))
        exists, is_dir = fs.exists(root), fs.isdir(root)
    except (ValueError, ImportError, OSError) as e:
        raise InputError(f"task path {spec.path!r}: cannot open ({e})") from None
    if not exists:
        raise InputError(f"task path {spec.path!r} does not exist")
    if is_dir:
        return _plan_folder(spec, fs, root)
    return _plan_file(spec, fs, root)


def _plan_file(spec: TaskSpec, fs: fsspec.AbstractFileSystem, root: str) -> _Plan:
    if spec.format == "glue" or spec.glue_task is not None:
        raise InputError(f"{spec.path}: a GLUE task is a folder of TSV files, not a file")
    suffix = PurePosixPath(root).suffix.lower()
    fmt = spec.format if spec.format != "auto" else _format_of_suffix(suffix)
    if fmt is None:
        raise InputError(
            f"{spec.path}: cannot tell the format from the extension {suffix!r}; "
            f"set format (one of {', '.join(FILE_EXTENSIONS)})"
        )
    train = _task_file(fs, root, spec.path)
    return _Plan(fs, fmt, None, PurePosixPath(root).stem, train, None, "test")


def _plan_folder(spec: TaskSpec, fs: fsspec.AbstractFileSystem, root: str) -> _Plan:
    try:
        listing = fs.ls(root, detail=True)
    except OSError as e:
        raise InputError(f"{spec.path}: cannot list the folder ({e})") from None
    files = {PurePosixPath(e["name"]).name: e["name"] for e in listing if e.get("type") == "file"}
    glue_task = spec.glue_task or _glue_task_of_name(PurePosixPath(root).name)
    asked_for_glue = spec.format == "glue" or spec.glue_task is not None
    if asked_for_glue and glue_task is None:
        raise InputError(
            f"{spec.path}: cannot tell which GLUE task the folder holds from its name; "
            f"set glue_task (one of {', '.join(GLUE_TASKS)})"
        )
    looks_like_glue = spec.format == "auto" and "train.tsv" in files
    if glue_task is not None and (asked_for_glue or looks_like_glue):
        return _plan_glue(spec, fs, files, glue_task)
    return _plan_split_files(spec, fs, root, files)


def _plan_glue(
    spec: TaskSpec, fs: fsspec.AbstractFileSystem, files: dict[str, str], task: GlueTask
) -> _Plan:
    layout = GLUE_LAYOUTS[task]
    found = ", ".join(sorted(files)) or "none"
    if "train.tsv" not in files:
        raise InputError(f"{spec.path}: GLUE task {task} needs train.tsv (files: {found})")
    train = _folder_file(fs, files, "train.tsv", spec.path)
    if layout.test_file in files:
        test = _folder_file(fs, files, layout.test_file, spec.path)
        if _glue_file_has_labels(fs, test, layout):  # GLUE's own test files carry no labels
            dev = (
                _folder_file(fs, files, layout.dev_file, spec.path)
                if (layout.dev_file in files)
                else None
            )
            return _Plan(fs, "tsv", task, task, train, test, "test", dev)
    if layout.dev_file in files:
        dev = _folder_file(fs, files, layout.dev_file, spec.path)
        return _Plan(fs, "tsv", task, task, train, dev, "dev")
    raise InputError(
        f"{spec.path}: GLUE task {task} needs {layout.dev_file}, or a {layout.test_file} with a "
        f"{layout.label!r} column, to evaluate on (files: {found})"
    )


def _plan_split_files(
    spec: TaskSpec, fs: fsspec.AbstractFileSystem, root: str, files: dict[str, str]
) -> _Plan:
    formats = list(FILE_EXTENSIONS) if spec.format == "auto" else [spec.format]
    trains = [(f, ext) for f in formats for ext in FILE_EXTENSIONS[f] if f"train{ext}" in files]
    found = ", ".join(sorted(files)) or "none"
    if not trains:
        wanted = ", ".join(f"train{e}" for f in formats for e in FILE_EXTENSIONS[f])
        raise InputError(f"{spec.path}: the folder has no {wanted} (files: {found})")
    if len(trains) > 1:
        names = ", ".join(f"train{ext}" for _, ext in trains)
        raise InputError(f"{spec.path}: the folder has several train files ({names}); set format")
    fmt, ext = trains[0]
    train = _folder_file(fs, files, f"train{ext}", spec.path)
    for split in EVALUATION_SPLITS:
        if f"{split}{ext}" in files:
            evaluation = _folder_file(fs, files, f"{split}{ext}", spec.path)
            dev = next(
                (
                    _folder_file(fs, files, f"{d}{ext}", spec.path)
                    for d in EVALUATION_SPLITS[1:]
                    if split == "test" and f"{d}{ext}" in files
                ),
                None,
            )
            return _Plan(fs, fmt, None, PurePosixPath(root).name, train, evaluation, split, dev)
    wanted = ", ".join(f"{s}{ext}" for s in EVALUATION_SPLITS)
    raise InputError(f"{spec.path}: train{ext} needs one of {wanted} beside it (files: {found})")


def _format_of_suffix(suffix: str) -> FileFormat | None:
    return next((f for f, exts in FILE_EXTENSIONS.items() if suffix in exts), None)


def _glue_task_of_name(name: str) -> GlueTask | None:
    """`SST-2`, `sst_2`, `STS-B`, `CoLA` -> the GLUE task; anything else -> None."""
    key = re.sub(r"[-_\s]", "", name).lower()
    return next((t for t in GLUE_TASKS if t == key), None)


def _task_file(fs: fsspec.AbstractFileSystem, path: str, name: str) -> _TaskFile:
    uri = os.path.realpath(path) if is_local_fs(fs) else fs.unstrip_protocol(path)
    return _TaskFile(path, name, uri)


def _folder_file(
    fs: fsspec.AbstractFileSystem, files: dict[str, str], base: str, folder: str
) -> _TaskFile:
    return _task_file(fs, files[base], f"{folder.rstrip('/')}/{base}")


def _fingerprint(fs: fsspec.AbstractFileSystem, file: _TaskFile) -> InputFingerprint:
    """sha256 of a local file (task files are small enough to always hash), ETag of an object."""
    try:
        return fingerprint_file(fs, file.path, file.uri)
    except OSError as e:
        raise InputError(f"{file.name}: cannot read ({e})") from None


# --- Reading files into raw columns -------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    """Column names to read. `pair` None: no pair column; not `pair_required`: use it if present."""

    text: str
    pair: str | None
    label: str
    pair_required: bool = True

    def resolve(self, file: str, available: list[str]) -> _Columns:
        """The columns as they are in `file`, or InputError for one that is missing."""
        pair = self.pair if self.pair in available else None
        wanted = [self.text, self.label] + ([self.pair] if self.pair and self.pair_required else [])
        for column in wanted:
            if column not in available:
                listed = ", ".join(repr(c) for c in available) or "none"
                raise InputError(f"{file}: no column {column!r} (columns: {listed})")
        return _Columns(self.text, pair, self.label)


@dataclass(frozen=True)
class _RawSplit:
    """One split's columns as read: values not yet checked (None where a row lacks one)."""

    file: str
    source: str
    columns: _Columns  # resolved: `pair` is set iff `pairs` is
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

    def take(self, index: np.ndarray, source: str) -> _RawSplit:
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


def _read_file(
    fs: fsspec.AbstractFileSystem, file: _TaskFile, fmt: FileFormat, columns: _Columns
) -> _RawSplit:
    if fmt == "jsonl":
        return _read_jsonl(fs, file, columns)
    if fmt == "parquet":
        return _read_parquet(fs, file, columns)
    return _read_delimited(fs, file, _DIALECTS[fmt], columns)


@contextlib.contextmanager
def _open_text(fs: fsspec.AbstractFileSystem, file: _TaskFile) -> Iterator[IO[str]]:
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


def _csv_reader(text: IO[str], dialect: _Dialect) -> Any:
    csv.field_size_limit(CSV_FIELD_SIZE_LIMIT)
    return csv.reader(text, delimiter=dialect.delimiter, quoting=dialect.quoting, strict=True)


def _read_delimited(
    fs: fsspec.AbstractFileSystem,
    file: _TaskFile,
    dialect: _Dialect,
    columns: _Columns,
    headerless: tuple[str, ...] | None = None,
) -> _RawSplit:
    """CSV/TSV with a header row, or (`headerless` names the columns) without one."""
    with _open_text(fs, file) as text:
        reader = _csv_reader(text, dialect)
        try:
            first = next(reader, None)
            if first is None:
                raise InputError(f"{file.name}: the file is empty (no header row)")
            data_rows: list[tuple[int, list[str]]] = []
            if headerless is not None and not _looks_like_header(first, columns):
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
    file: _TaskFile, header: list[str], columns: _Columns, data_rows: list[tuple[int, list[str]]]
) -> _RawSplit:
    def column(name: str) -> list[str | None]:
        at = header.index(name)
        return [row[at] if at < len(row) else None for _, row in data_rows]

    return _RawSplit(
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


def _looks_like_header(row: list[str], columns: _Columns) -> bool:
    """A header row names the text or label column (CoLA's test.tsv has one, train.tsv not)."""
    return columns.text in row or columns.label in row


def _read_jsonl(fs: fsspec.AbstractFileSystem, file: _TaskFile, columns: _Columns) -> _RawSplit:
    """One JSON object per line; blank lines are skipped. A key missing from a line is None."""
    seen: dict[str, None] = {}  # every key, in order of first appearance
    wanted = [c for c in (columns.text, columns.pair, columns.label) if c]
    values: dict[str, list[Any]] = {c: [] for c in wanted}
    lines: list[int] = []
    with _open_text(fs, file) as text:
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
    return _RawSplit(
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


def _read_parquet(fs: fsspec.AbstractFileSystem, file: _TaskFile, columns: _Columns) -> _RawSplit:
    try:
        with fs.open(file.path, "rb") as f:
            parquet = pq.ParquetFile(f)
            resolved = columns.resolve(file.name, parquet.schema_arrow.names)
            wanted = [c for c in (resolved.text, resolved.pair, resolved.label) if c]
            table = parquet.read(columns=wanted)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{file.name}: not a readable Parquet file ({e})") from None
    return _RawSplit(
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


def _require_rows(raw: _RawSplit, split: str) -> None:
    if not raw.labels:
        raise InputError(f"{raw.file}: the {split} split has no rows")


def _checked_texts(raw: _RawSplit, values: list[Any], column: str) -> list[str]:
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


def _task_split(raw: _RawSplit, labels: np.ndarray) -> TaskSplit:
    texts = _checked_texts(raw, raw.texts, raw.columns.text)
    pairs = None
    if raw.pairs is not None and raw.columns.pair is not None:
        pairs = _checked_texts(raw, raw.pairs, raw.columns.pair)
    return TaskSplit(texts=texts, pairs=pairs, labels=labels, source=raw.source)


# --- GLUE ---------------------------------------------------------------------------------------


def _glue_columns(layout: GlueLayout) -> _Columns:
    return _Columns(layout.text, layout.pair, layout.label)


def _glue_file_has_labels(
    fs: fsspec.AbstractFileSystem, file: _TaskFile, layout: GlueLayout
) -> bool:
    """Whether a GLUE file carries labels, from its first row only (planning stays cheap)."""
    with _open_text(fs, file) as text:
        try:
            first = next(_csv_reader(text, GLUE_DIALECT), None)
        except csv.Error:
            return True  # let the full read report it
    if first is None:
        return True  # an empty file: let the full read report the empty split
    columns = _glue_columns(layout)
    if layout.headerless is not None and not _looks_like_header(first, columns):
        return len(first) >= len(layout.headerless)
    return layout.label in first


def _read_glue(
    spec: TaskSpec, plan: _Plan, task: GlueTask, inputs: list[InputFingerprint]
) -> TaskData:
    layout = GLUE_LAYOUTS[task]
    problem: Problem = "regression" if layout.label_names is None else "classification"
    if spec.problem not in ("auto", problem):
        raise InputError(f"{spec.path}: problem is {spec.problem!r}, but GLUE {task} is {problem}")
    assert plan.evaluation is not None  # GLUE folders always hold their evaluation split
    splits = []
    files = [(plan.train, "train"), (plan.evaluation, plan.evaluation_split)]
    for file, split in files + ([(plan.dev, "dev")] if plan.dev is not None else []):
        raw = _read_delimited(plan.fs, file, GLUE_DIALECT, _glue_columns(layout), layout.headerless)
        _require_rows(raw, split)
        splits.append(_task_split(raw, _glue_labels(raw, task, layout)))
    return TaskData(
        name=spec.name or task,
        problem=problem,
        label_names=list(layout.label_names) if layout.label_names is not None else None,
        metrics=layout.metrics,
        train=splits[0],
        evaluation=splits[1],
        evaluation_split=plan.evaluation_split,
        split_origin="files",
        inputs=inputs,
        dev=splits[2] if len(splits) > 2 else None,
    )


def _glue_labels(raw: _RawSplit, task: GlueTask, layout: GlueLayout) -> np.ndarray:
    """Class ids in the layout's fixed order, or float scores for STS-B."""
    out = np.empty(len(raw.labels), dtype=np.int64 if layout.label_names else np.float64)
    index = {name: i for i, name in enumerate(layout.label_names or ())}
    for i, value in enumerate(raw.labels):
        text = (value or "").strip()
        if not text:
            raise InputError(f"{raw.where(i)}: missing label in column {layout.label!r}")
        if layout.label_names is None:
            score = float(text) if _NUMBER.fullmatch(text) else math.nan
            if not math.isfinite(score):
                raise InputError(f"{raw.where(i)}: score {text!r} is not a number")
            out[i] = score
        elif text in index:
            out[i] = index[text]
        else:
            names = ", ".join(layout.label_names)
            raise InputError(f"{raw.where(i)}: label {text!r} is not one of {task}'s ({names})")
    return out


# --- CSV, TSV, JSON Lines, Parquet --------------------------------------------------------------


@dataclass(frozen=True)
class _Labels:
    """One split's labels, parsed: each value's kind and its value."""

    raw: _RawSplit
    kinds: list[LabelKind]
    values: list[LabelValue]

    def take(self, index: np.ndarray, source: str) -> _Labels:
        pick = index.tolist()
        kinds, values = [self.kinds[i] for i in pick], [self.values[i] for i in pick]
        return _Labels(self.raw.take(index, source), kinds, values)


def _read_files(spec: TaskSpec, plan: _Plan, inputs: list[InputFingerprint]) -> TaskData:
    train, evaluation = _read_labels(spec, plan)
    dev = None
    if plan.dev is not None:
        raw = _read_file(plan.fs, plan.dev, plan.format, train.raw.columns)
        _require_rows(raw, "dev")
        dev = _parse_labels(raw)
    labelled = [train, evaluation] + ([dev] if dev is not None else [])
    kind = _common_kind(labelled)
    problem = _problem(spec, kind, *labelled)
    if problem == "regression":
        names = None
        train_y, eval_y = _targets(train), _targets(evaluation)
        dev_y = _targets(dev) if dev is not None else None
        metrics: tuple[str, ...] = ("pearson", "spearman", "mse")
    else:
        names = _class_names(train, kind)
        train_y, eval_y = _class_ids(train, names), _class_ids(evaluation, names)
        dev_y = _class_ids(dev, names) if dev is not None else None
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy", "macro_f1")
    return TaskData(
        name=spec.name or plan.default_name,
        problem=problem,
        label_names=names,
        metrics=metrics,
        train=_task_split(train.raw, train_y),
        evaluation=_task_split(evaluation.raw, eval_y),
        evaluation_split=plan.evaluation_split,
        split_origin="seeded" if plan.evaluation is None else "files",
        inputs=inputs,
        dev=_task_split(dev.raw, dev_y) if dev is not None and dev_y is not None else None,
    )


def _read_labels(spec: TaskSpec, plan: _Plan) -> tuple[_Labels, _Labels]:
    """(train, evaluation) with parsed labels: from their files, or one file split by seed."""
    columns = _Columns(
        spec.text_field,
        spec.text_pair_field or "text_pair",
        spec.label_field,
        pair_required=spec.text_pair_field is not None,
    )
    raw = _read_file(plan.fs, plan.train, plan.format, columns)
    _require_rows(raw, "train")
    train = _parse_labels(raw)
    if plan.evaluation is None:
        _common_kind([train])  # bad labels are worth reporting before a failed split
        return _seeded_split(train, spec.test_fraction, spec.split_seed)
    # The evaluation file must have the pair column train has, and only that one.
    raw = _read_file(plan.fs, plan.evaluation, plan.format, raw.columns)
    _require_rows(raw, plan.evaluation_split)
    return train, _parse_labels(raw)


def _seeded_split(labels: _Labels, fraction: float, seed: int) -> tuple[_Labels, _Labels]:
    """(train, test): round(n * fraction) rows drawn by `seed` are held out; both in file order."""
    n = len(labels.values)
    n_eval = round(n * fraction)
    if not 0 < n_eval < n:
        raise InputError(
            f"{labels.raw.file}: {n} rows are too few to hold out test_fraction={fraction} "
            f"({n_eval} rows) for evaluation; add rows or change test_fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    train, held_out = np.sort(order[n_eval:]), np.sort(order[:n_eval])
    source = f"{labels.raw.file} (seeded split)"
    return labels.take(train, source), labels.take(held_out, source)


def _parse_labels(raw: _RawSplit) -> _Labels:
    kinds: list[LabelKind] = []
    values: list[LabelValue] = []
    for i, value in enumerate(raw.labels):
        try:
            kind, parsed = _parse_label(value, raw.spelled_numbers)
        except ValueError as e:
            raise InputError(f"{raw.where(i)}: {e} in column {raw.columns.label!r}") from None
        kinds.append(kind)
        values.append(parsed)
    return _Labels(raw, kinds, values)


def _parse_label(value: Any, spelled_numbers: bool) -> tuple[LabelKind, LabelValue]:
    """A label's kind and value; ValueError says what is wrong with one that is neither."""
    if isinstance(value, bool):  # before int: bool is an int
        return "boolean", value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("missing label")
        if spelled_numbers and _INTEGER.fullmatch(text):
            return "number", int(text)
        if not (spelled_numbers and _NUMBER.fullmatch(text)):
            return "string", text
        value = float(text)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"label {value} is not a finite number")
        return "number", value
    if value is None:
        raise ValueError("missing label")
    raise ValueError(f"label {value!r} is a {type(value).__name__}, not text, a number or a bool")


def _common_kind(splits: list[_Labels]) -> LabelKind:
    """The one kind all labels share, or InputError showing one row of each kind."""
    examples: dict[LabelKind, str] = {}
    for labels in splits:
        for kind in dict.fromkeys(labels.kinds):
            i = labels.kinds.index(kind)
            examples.setdefault(kind, f"{labels.raw.where(i)} ({labels.values[i]!r})")
    if len(examples) > 1:
        files = " and ".join(dict.fromkeys(s.raw.file for s in splits))
        shown = "; ".join(f"a {kind} at {where}" for kind, where in examples.items())
        raise InputError(f"labels in {files} are not all of one kind: {shown}")
    return next(iter(examples))


def _problem(spec: TaskSpec, kind: LabelKind, *splits: _Labels) -> Problem:
    if kind != "number":
        if spec.problem == "regression":
            first = splits[0]
            raise InputError(
                f"{first.raw.file}: problem is 'regression' but the labels are {kind}s, "
                f"e.g. {first.raw.where(0)} ({first.values[0]!r})"
            )
        return "classification"
    if spec.problem != "auto":
        return spec.problem
    whole = all(_is_whole(v) for s in splits for v in s.values)
    return "classification" if whole else "regression"


def _is_whole(value: LabelValue) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _label_name(value: LabelValue) -> str:
    """A class's name: the label as written, numbers without a trailing '.0', bools lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and _is_whole(value):
        return str(int(value))
    return str(value)


def _class_names(train: _Labels, kind: LabelKind) -> list[str]:
    """Train's distinct labels: strings sorted, numbers and bools by value."""
    by_name: dict[str, LabelValue] = {}
    for value in train.values:
        by_name.setdefault(_label_name(value), value)
    names = sorted(by_name) if kind == "string" else sorted(by_name, key=by_name.__getitem__)
    if len(names) < 2:
        raise InputError(
            f"{train.raw.source}: the train split has a single class {names[0]!r}; "
            "classification needs two or more"
        )
    return names


def _class_ids(labels: _Labels, names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    ids = np.empty(len(labels.values), dtype=np.int64)
    for i, value in enumerate(labels.values):
        name = _label_name(value)
        if name not in index:
            raise InputError(
                f"{labels.raw.where(i)}: label {name!r} does not occur in the train split "
                f"(classes: {', '.join(names)})"
            )
        ids[i] = index[name]
    return ids


def _targets(labels: _Labels) -> np.ndarray:
    return np.asarray(labels.values, dtype=np.float64)
