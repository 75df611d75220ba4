"""Ingestion: raw text files -> a `corpus` of cleaned, sentence-split, deduplicated documents.

The work is a map and a reduce, both spread over a process pool:

- map: each task reads a group of input files, cleans and segments every document, hashes it, and
  appends it to a spill file of the bucket its hash selects (train or validation by one part of the
  hash, bucket by another). Memory per task is bounded by the spill buffer.
- between them, when the hash leaves the validation split fewer than `min_validation_documents`
  documents, the train documents with the smallest hashes (each task keeps its lowest ids) are moved
  to validation: the same documents whatever the number of tasks.
- reduce: each bucket's spill files are read, sorted by (hash, source), exact duplicates dropped
  (the copy with the smallest source name is kept) and written as one Parquet file.

Every document lands in the same bucket and every bucket is sorted the same way whatever the number
of tasks or workers, so the output is byte-identical for any `workers`.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Split
from bertflow.pipeline.core.parallel import run_tasks
from bertflow.pipeline.core.progress import BYTES, Progress, ProgressCallback
from bertflow.pipeline.core.scratch import TEMP_PREFIX, scratch_folder
from bertflow.pipeline.core.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore, Published
from bertflow.pipeline.ingest.clean import SentenceLimits, document_sentences
from bertflow.pipeline.ingest.config import IngestConfig  # re-exported: importers keep this path
from bertflow.pipeline.ingest.corpus import CORPUS_SCHEMA, SPLITS, corpus_summary, write_corpus_file
from bertflow.pipeline.ingest.formats import ReaderOptions, read_documents
from bertflow.pipeline.ingest.plan import IngestPlan, plan_ingest  # re-exported too
from bertflow.pipeline.ingest.raw import ReadTally
from bertflow.pipeline.ingest.sources import SourceFile

SPILL_FLUSH_BYTES = 32 << 20
MIN_TASK_BYTES = 32 << 20
MAX_EXAMPLES = 20
MAX_VALIDATION_SHARE = 4  # a top-up leaves at most 1 in 4 documents in validation


def ingest(
    store: ArtifactStore,
    config: IngestConfig,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Published:
    """Plan, skip when the corpus exists, else build and publish it."""
    plan = plan_ingest(config, storage_options)
    return cached_or_built(
        store,
        plan,
        lambda: build_and_publish(store, plan, callbacks, flow_run_id, storage_options),
    )


def build_and_publish(
    store: ArtifactStore,
    plan: IngestPlan,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Published:
    with store.staging(plan.artifact_id) as staging:
        stats, layout = build_corpus(plan, staging, callbacks, storage_options)
        return store.publish(
            staging,
            plan.artifact_id,
            config=plan.config.model_dump(mode="json"),
            inputs=plan.inputs,
            stats=stats,
            layout=layout,
            summary=corpus_summary(stats),
            flow_run_id=flow_run_id,
        )


def build_corpus(
    plan: IngestPlan,
    out_dir: Path,
    callbacks: Sequence[ProgressCallback] = (),
    storage_options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the corpus files of `plan` into `out_dir`; return (stats, layout)."""
    config = plan.config
    started = time.monotonic()
    with scratch_folder(f"{TEMP_PREFIX}ingest-spill-{plan.artifact_id}-") as spill:
        spill_dir = str(spill)
        map_tasks = [
            _MapTask(i, group, config, spill_dir, plan.buckets, storage_options or {})
            for i, group in enumerate(_group_files(plan.files, config.workers))
        ]
        progress = Progress("ingest", sum(f.size for f in plan.files), BYTES, callbacks)
        mapped: list[_MapResult] = run_tasks(_map_files, map_tasks, config.workers, progress)
        progress.close()
        tally = _merge_map_results(mapped)
        _check_bad_share(tally, config.max_bad_fraction)
        promoted = _to_promote(config, mapped)
        _promote(Path(spill_dir), promoted, plan.buckets)

        reduce_tasks = [
            _ReduceTask(
                spill_dir,
                split,
                bucket,
                str(out_dir / split / f"part-{bucket:05d}.parquet"),
                exclude=frozenset(i for i in promoted if _bucket(i, plan.buckets[split]) == bucket)
                if split == "train"
                else frozenset(),
            )
            for split in SPLITS
            for bucket in range(plan.buckets[split])
        ]
        reduced: list[_ReduceResult] = run_tasks(_reduce_bucket, reduce_tasks, config.workers, None)

    stats = _stats(plan, tally, reduced, len(promoted), time.monotonic() - started)
    if stats["documents"]["train"] == 0:
        raise InputError(
            "no documents left after filtering: "
            f"{tally.documents_read} read, filtered {dict(tally.filtered)},"
            f" {stats['duplicates_removed']} duplicates"
        )
    layout = {
        "splits": {
            split: [
                {"path": r.relpath(out_dir), "documents": r.documents, "sentences": r.sentences}
                for r in reduced
                if r.split == split and r.documents
            ]
            for split in SPLITS
        },
        "schema": [f"{f.name}: {f.type}" for f in CORPUS_SCHEMA],
    }
    return stats, layout


# -- map ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _MapTask:
    index: int
    files: list[SourceFile]
    config: IngestConfig
    spill_dir: str
    buckets: dict[Split, int]
    storage_options: dict[str, Any]


@dataclass
class _MapResult:
    tally: ReadTally = field(default_factory=ReadTally)
    documents_read: int = 0
    documents_kept: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    sentences_dropped_short: int = 0
    sentences_split_long: int = 0
    files_read: int = 0
    files_skipped: list[dict[str, str]] = field(default_factory=list)
    bytes_read: int = 0
    validation_ids: set[str] = field(default_factory=set)  # up to min_validation_documents
    lowest_train_ids: list[str] = field(default_factory=list)  # as many, the smallest, sorted

    def note(self, split: Split, doc_id: str, wanted: int) -> None:
        """Remember enough ids to top the validation split up to `wanted` documents later."""
        if split == "validation":
            if len(self.validation_ids) < wanted:
                self.validation_ids.add(doc_id)
            return
        lowest = self.lowest_train_ids
        if len(lowest) == wanted and (not lowest or doc_id >= lowest[-1]):
            return
        at = bisect.bisect_left(lowest, doc_id)
        if at < len(lowest) and lowest[at] == doc_id:
            return  # a duplicate: it counts once
        lowest.insert(at, doc_id)
        del lowest[wanted:]


def _map_files(task: _MapTask, report: Callable[[int, int, int], None]) -> _MapResult:
    config = task.config
    limits = SentenceLimits(config.min_sentence_chars, config.max_sentence_chars)
    options = ReaderOptions(
        config.text_field, config.doc_split, config.doc_separator, config.max_undecodable_fraction
    )
    threshold = int(config.validation_fraction * 2**64)
    result = _MapResult()
    spill = _SpillWriter(Path(task.spill_dir), task.index)
    for file in task.files:
        counted = 0
        pending_docs = 0

        def on_bytes(n: int) -> None:
            nonlocal counted, pending_docs
            counted += n
            report(n, 0, pending_docs)
            pending_docs = 0

        try:
            with fsspec.open(file.uri, "rb", **task.storage_options) as raw:
                stream = io.BufferedReader(_CountingRaw(raw, on_bytes), buffer_size=1 << 20)
                for doc in read_documents(stream, file.name, file.format, options, result.tally):
                    result.documents_read += 1
                    pending_docs += 1
                    reason = _route(
                        doc.text, doc.location, limits, config, threshold, task, spill, result
                    )
                    if reason:
                        result.filtered[reason] += 1
            result.files_read += 1
        except (InputError, OSError) as e:
            error = (
                e if isinstance(e, InputError) else InputError(f"{file.name}: cannot read ({e})")
            )
            if config.on_bad_file == "fail":
                spill.close()
                raise error from None
            result.files_skipped.append({"file": file.name, "reason": str(error)})
        report(max(0, file.size - counted), 1, pending_docs)
        result.bytes_read += file.size
    spill.close()
    return result


def _route(
    text: str,
    location: str,
    limits: SentenceLimits,
    config: IngestConfig,
    threshold: int,
    task: _MapTask,
    spill: _SpillWriter,
    result: _MapResult,
) -> str | None:
    """Clean, filter and hash one document, then spill it; return why it was dropped, if it was."""
    sentences, dropped_short, split_long = document_sentences(text, limits)
    result.sentences_dropped_short += dropped_short
    result.sentences_split_long += split_long
    if not sentences:
        return "empty"
    chars = sum(len(s) for s in sentences)
    if chars < config.min_doc_chars:
        return "too_few_chars"
    if len(sentences) < config.min_doc_sentences:
        return "too_few_sentences"
    if config.max_doc_chars is not None and chars > config.max_doc_chars:
        return "too_many_chars"
    doc_id = hashlib.blake2b("\n".join(sentences).encode(), digest_size=16).hexdigest()
    split: Split = "validation" if int(doc_id[:16], 16) < threshold else "train"
    spill.add(split, _bucket(doc_id, task.buckets[split]), doc_id, location, sentences, chars)
    if threshold:
        result.note(split, doc_id, config.min_validation_documents)
    result.documents_kept += 1
    return None


def _bucket(doc_id: str, buckets: int) -> int:
    """A document's bucket, from the hash bits that do not choose its split."""
    return int(doc_id[16:24], 16) % buckets


class _CountingRaw(io.RawIOBase):
    """A raw stream that reports how many bytes were read from the file underneath."""

    def __init__(self, inner: Any, on_bytes: Callable[[int], None]):
        self.inner = inner
        self.on_bytes = on_bytes
        self._pending = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._pending += n
        if self._pending >= 1 << 20 or n == 0:
            self.on_bytes(self._pending)
            self._pending = 0
        return n


@dataclass
class _Buffer:
    """Rows of one bucket, with sentences kept flat (Arrow builds flat lists far faster)."""

    ids: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])

    def batch(self) -> pa.RecordBatch:
        sentences = pa.ListArray.from_arrays(
            pa.array(self.offsets, pa.int32()),
            pa.array(self.sentences, pa.string()),
            type=CORPUS_SCHEMA.field("sentences").type,
        )
        return pa.record_batch([self.ids, self.sources, sentences], schema=CORPUS_SCHEMA)


class _SpillWriter:
    """Buffers routed documents per (split, bucket) and appends them to Arrow stream files."""

    def __init__(self, spill_dir: Path, task_index: int):
        self.spill_dir = spill_dir
        self.task_index = task_index
        self.buffers: dict[tuple[Split, int], _Buffer] = {}
        self.writers: dict[tuple[Split, int], pa.ipc.RecordBatchStreamWriter] = {}
        self.buffered = 0

    def add(
        self, split: Split, bucket: int, doc_id: str, source: str, sentences: list[str], chars: int
    ):
        buffer = self.buffers.get((split, bucket))
        if buffer is None:
            buffer = self.buffers[(split, bucket)] = _Buffer()
        buffer.ids.append(doc_id)
        buffer.sources.append(source)
        buffer.sentences.extend(sentences)
        buffer.offsets.append(len(buffer.sentences))
        self.buffered += chars
        if self.buffered >= SPILL_FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        for key, buffer in self.buffers.items():
            writer = self.writers.get(key)
            if writer is None:
                folder = self.spill_dir / f"{key[0]}-{key[1]:05d}"
                folder.mkdir(exist_ok=True)
                sink = pa.OSFile(str(folder / f"{self.task_index:05d}.arrow"), "wb")
                writer = self.writers[key] = pa.ipc.new_stream(sink, CORPUS_SCHEMA)
            writer.write_batch(buffer.batch())
        self.buffers.clear()
        self.buffered = 0

    def close(self) -> None:
        self.flush()
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


# -- topping up the validation split --------------------------------------------------------------


def _to_promote(config: IngestConfig, mapped: list[_MapResult]) -> list[str]:
    """Ids of the train documents to move to validation: the lowest, as many as it lacks of
    min_validation_documents, or of a quarter of the documents if that is fewer."""
    if config.validation_fraction == 0:
        return []
    wanted = min(config.min_validation_documents, _validation_cap(mapped))
    validation = set().union(*(r.validation_ids for r in mapped))
    if len(validation) >= wanted:
        return []
    lowest = sorted(set().union(*(r.lowest_train_ids for r in mapped)))
    return lowest[: wanted - len(validation)]


def _validation_cap(mapped: list[_MapResult]) -> int:
    """The most documents a top-up may leave in validation: a quarter of those kept."""
    return sum(r.documents_kept for r in mapped) // MAX_VALIDATION_SHARE


def _promote(spill_dir: Path, ids: list[str], buckets: dict[Split, int]) -> None:
    """Copy the promoted documents from their train spill into their validation bucket's (the
    train reduce leaves them out)."""
    for train_bucket in sorted({_bucket(i, buckets["train"]) for i in ids}):
        folder = spill_dir / f"train-{train_bucket:05d}"
        table = pa.concat_tables(
            pa.ipc.open_stream(pa.OSFile(str(p))).read_all() for p in sorted(folder.glob("*.arrow"))
        )
        moved = table.filter(pc.is_in(table.column("doc_id"), pa.array(ids, pa.string())))
        targets = [_bucket(i, buckets["validation"]) for i in moved.column("doc_id").to_pylist()]
        for bucket in sorted(set(targets)):
            rows = moved.filter(pa.array([t == bucket for t in targets]))
            out = spill_dir / f"validation-{bucket:05d}"
            out.mkdir(exist_ok=True)
            with pa.ipc.new_stream(
                pa.OSFile(str(out / f"promoted-{train_bucket:05d}.arrow"), "wb"), CORPUS_SCHEMA
            ) as writer:
                writer.write_table(rows)


# -- reduce ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReduceTask:
    spill_dir: str
    split: Split
    bucket: int
    out_path: str
    exclude: frozenset[str] = frozenset()  # ids moved to validation


@dataclass(frozen=True)
class _ReduceResult:
    split: Split
    path: str
    documents: int
    sentences: int
    characters: int
    duplicates: int

    def relpath(self, root: Path) -> str:
        return Path(self.path).relative_to(root).as_posix()


def _reduce_bucket(task: _ReduceTask, report: Callable[[int, int, int], None]) -> _ReduceResult:
    folder = Path(task.spill_dir) / f"{task.split}-{task.bucket:05d}"
    pieces = sorted(folder.glob("*.arrow")) if folder.exists() else []
    if not pieces:
        report(0, 1, 0)
        return _ReduceResult(task.split, task.out_path, 0, 0, 0, 0)
    table = pa.concat_tables(pa.ipc.open_stream(pa.OSFile(str(p))).read_all() for p in pieces)
    if task.exclude:
        ids = pa.array(sorted(task.exclude), pa.string())
        table = table.filter(pc.invert(pc.is_in(table.column("doc_id"), ids)))
    table = table.sort_by([("doc_id", "ascending"), ("source", "ascending")])
    ids = table.column("doc_id").combine_chunks()
    first = pc.not_equal(ids[1:], ids[:-1]) if len(ids) > 1 else pa.array([], pa.bool_())
    keep = pa.concat_arrays([pa.array([True]), first])
    deduped = table.filter(keep).combine_chunks()
    write_corpus_file(deduped, Path(task.out_path))
    shutil.rmtree(folder, ignore_errors=True)
    sentences = deduped.column("sentences")
    report(0, 1, deduped.num_rows)
    return _ReduceResult(
        task.split,
        task.out_path,
        documents=deduped.num_rows,
        sentences=int(pc.sum(pc.list_value_length(sentences)).as_py() or 0),
        characters=int(pc.sum(pc.utf8_length(pc.list_flatten(sentences))).as_py() or 0),
        duplicates=table.num_rows - deduped.num_rows,
    )


# -- planning and stats ---------------------------------------------------------------------------


def _group_files(files: list[SourceFile], workers: int) -> list[list[SourceFile]]:
    """Consecutive groups of files of roughly equal bytes, several per worker for balance."""
    total = sum(f.size for f in files)
    per_task = max(MIN_TASK_BYTES, total // max(1, workers * 4))
    groups: list[list[SourceFile]] = [[]]
    size = 0
    for f in files:
        if groups[-1] and size + f.size > per_task:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += f.size
    return groups


@dataclass
class _Tally:
    read: ReadTally
    documents_read: int
    filtered: Counter[str]
    sentences_dropped_short: int
    sentences_split_long: int
    files_read: int
    files_skipped: list[dict[str, str]]
    bytes_read: int


def _merge_map_results(results: list[_MapResult]) -> _Tally:
    read = ReadTally()
    filtered: Counter[str] = Counter()
    for r in results:
        read.merge(r.tally)
        filtered.update(r.filtered)
    return _Tally(
        read=read,
        documents_read=sum(r.documents_read for r in results),
        filtered=filtered,
        sentences_dropped_short=sum(r.sentences_dropped_short for r in results),
        sentences_split_long=sum(r.sentences_split_long for r in results),
        files_read=sum(r.files_read for r in results),
        files_skipped=[s for r in results for s in r.files_skipped],
        bytes_read=sum(r.bytes_read for r in results),
    )


def _check_bad_share(tally: _Tally, max_bad_fraction: float) -> None:
    records, malformed = tally.read.records, tally.read.malformed
    if records and malformed / records > max_bad_fraction:
        examples = "; ".join(tally.read.malformed_examples[:5])
        raise InputError(
            f"{malformed} of {records} records are malformed ({malformed / records:.1%}, more than"
            f" max_bad_fraction {max_bad_fraction:.1%}); for example: {examples}"
        )


def _stats(
    plan: IngestPlan, tally: _Tally, reduced: list[_ReduceResult], promoted: int, seconds: float
) -> dict[str, Any]:
    by_split = {s: [r for r in reduced if r.split == s] for s in SPLITS}
    return {
        "documents": {s: sum(r.documents for r in by_split[s]) for s in SPLITS},
        "sentences": {s: sum(r.sentences for r in by_split[s]) for s in SPLITS},
        "characters": {s: sum(r.characters for r in by_split[s]) for s in SPLITS},
        "documents_read": tally.documents_read,
        "duplicates_removed": sum(r.duplicates for r in reduced),
        "validation_topped_up": promoted,  # documents moved from train to reach the minimum
        "documents_filtered": dict(sorted(tally.filtered.items())),
        "sentences_dropped_short": tally.sentences_dropped_short,
        "sentences_split_long": tally.sentences_split_long,
        "records": tally.read.records,
        "malformed_records": tally.read.malformed,
        "malformed_examples": tally.read.malformed_examples[:MAX_EXAMPLES],
        "invalid_utf8_replaced": tally.read.replaced_chars,
        "records_skipped": dict(sorted(tally.read.skipped.items())),
        "files_read": tally.files_read,
        "files_skipped": [{"file": s.name, "reason": s.reason} for s in plan.skipped]
        + tally.files_skipped,
        "input_bytes": tally.bytes_read,
        "seconds": round(seconds, 3),
        "warnings": _warnings(plan, by_split),
    }


def _warnings(plan: IngestPlan, by_split: dict[Split, list[_ReduceResult]]) -> list[str]:
    warnings = []
    c = plan.config
    validation = sum(r.documents for r in by_split["validation"])
    if c.validation_fraction > 0 and validation < c.min_validation_documents:
        kept = validation + sum(r.documents for r in by_split["train"])
        warnings.append(
            f"the validation split holds {validation} documents, fewer than "
            f"min_validation_documents {c.min_validation_documents}: the corpus keeps {kept}, "
            f"and at most a quarter is held out"
            + ("; stages that measure on it report no validation metrics" if not validation else "")
        )
    return warnings
