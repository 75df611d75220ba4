"""The shard stage: corpus + tokenizer -> balanced, shuffled Parquet shards of BERT examples.

The work runs in two parallel steps, each over a process pool (or a Dask cluster, through the
flows layer):

- map, one task per corpus file: tokenise its documents, build examples with the BERT recipe
  (`examples.py`) for each dupe pass, mask them when masking is static, and append example j to
  spill piece (j + offset) mod S of S shards, the offset drawn for that file. Memory: one corpus
  file's tokens.
- write, one task per shard: read the shard's pieces from every file, take or give the few rows
  that make every shard's count N // S or N // S + 1 (a plan computed from the pieces' counts
  alone), shuffle the rows, write the Parquet shard (`write.py`). Memory: one shard.

Seeds derive from (seed, split, file, pass) and (seed, split, shard), so the output depends only on
the inputs, the config and the seed: never on the number of workers or how the work was split.
"""

from __future__ import annotations

import array
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import MASK, Split
from bertflow.pipeline.core.manifest import InputFingerprint, Manifest, artifact_id
from bertflow.pipeline.core.parallel import Report, run_tasks
from bertflow.pipeline.core.progress import Progress, ProgressCallback
from bertflow.pipeline.core.scratch import TEMP_PREFIX, scratch_folder, sweep
from bertflow.pipeline.core.seeds import derive_seed, python_rng
from bertflow.pipeline.core.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore, Published, StoreError
from bertflow.pipeline.ingest.corpus import SPLITS, split_files
from bertflow.pipeline.shards.config import ShardConfig  # re-exported: importers keep this path
from bertflow.pipeline.shards.examples import Example, document_examples
from bertflow.pipeline.shards.format import (
    SPECIAL_NAMES,
    VOCAB_FILE,
    shard_schema,
    token_type,
    vocab_flags,
)
from bertflow.pipeline.shards.masking import MaskingRule, mask_batch
from bertflow.pipeline.shards.write import WriteResult, WriteTask, balance, write_shard

TASK_BYTES = 2 << 20  # text per map task: small enough to balance two workers on a small corpus
HISTOGRAM_BIN = 16  # tokens per bin of the length histogram
MASK_CHUNK = 4096  # examples masked per numpy call


@dataclass(frozen=True)
class ShardPlan:
    config: ShardConfig
    corpus: Manifest
    tokenizer: Manifest
    artifact_id: str

    @property
    def upstream(self) -> dict[str, str]:
        return {"corpus": self.corpus.id, "tokenizer": self.tokenizer.id}

    @property
    def inputs(self) -> list[InputFingerprint]:
        return []  # everything it reads is in the store


def plan_shards(
    store: ArtifactStore, corpus_id: str, tokenizer_id: str, config: ShardConfig
) -> ShardPlan:
    """Check the upstream artifacts and name the shards artifact."""
    corpus = store.require(corpus_id, kind="corpus")
    tokenizer = store.require(tokenizer_id, kind="tokenizer")
    vocab_size = tokenizer.stats.get("vocab_size")
    if not vocab_size:
        raise InputError(f"{tokenizer_id}: the tokenizer artifact records no vocabulary size")
    if not corpus.stats.get("documents", {}).get("train"):
        raise InputError(f"{corpus_id}: the corpus has an empty train split")
    shards_id = artifact_id(
        "shards", config.identity(), upstream={"corpus": corpus_id, "tokenizer": tokenizer_id}
    )
    return ShardPlan(config, corpus, tokenizer, shards_id)


def make_shards(
    store: ArtifactStore,
    corpus_id: str,
    tokenizer_id: str,
    config: ShardConfig,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
) -> Published:
    plan = plan_shards(store, corpus_id, tokenizer_id, config)
    return cached_or_built(
        store, plan, lambda: build_and_publish(store, plan, callbacks, flow_run_id)
    )


MAX_RANDOM_NEXT_SHARE = 0.9  # 0.5 is drawn; short examples add more (0.78 at 32 tokens), not this
TaskRunner = Callable[[Callable[[Any, Report], Any], list[Any]], list[Any]]


def build_and_publish(
    store: ArtifactStore,
    plan: ShardPlan,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
    runner: TaskRunner | None = None,
    spill_root: str | None = None,
) -> Published:
    """Build the shards in a staging folder and publish them. `runner` runs a list of tasks (the
    default is a process pool of `config.workers`); `spill_root` is where intermediate files go,
    which must be reachable from every worker."""
    with store.staging(plan.artifact_id) as staging:
        stats, layout = build_shards(store, plan, staging, callbacks, runner, spill_root)
        return store.publish(
            staging,
            plan.artifact_id,
            config=plan.config.model_dump(mode="json"),
            upstream={"corpus": plan.corpus.id, "tokenizer": plan.tokenizer.id},
            stats=stats,
            layout=layout,
            summary=shards_summary(stats, layout),
            flow_run_id=flow_run_id,
        )


def build_shards(
    store: ArtifactStore,
    plan: ShardPlan,
    out_dir: Path,
    callbacks: Sequence[ProgressCallback] = (),
    runner: TaskRunner | None = None,
    spill_root: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    config = plan.config
    started = time.monotonic()
    store.check_intact(plan.corpus)
    store.check_intact(plan.tokenizer)
    vocab = _read_tokenizer_files(store, plan.tokenizer, out_dir)
    prefix = f"{TEMP_PREFIX}shards-{plan.artifact_id}-"
    if spill_root is not None:  # $TMPDIR is swept by the staging folder; a chosen folder here
        sweep(spill_root, prefix + "*")
    with scratch_folder(prefix, spill_root) as spill_folder:
        spill = str(spill_folder)
        map_tasks = [
            _MapTask(
                store.url,
                plan.corpus,
                plan.tokenizer.id,
                split,
                index,
                path,
                group,
                part,
                parts,
                config,
                spill,
            )
            for split in SPLITS
            for index, (path, group, part, parts) in enumerate(
                _map_slices(store, plan.corpus, split)
            )
        ]

        def run(stage: str, fn: Callable[[Any, Report], Any], tasks: list[Any]) -> list[Any]:
            if runner is not None:
                return runner(fn, tasks)
            progress = Progress(stage, len(tasks), "task", callbacks)
            try:
                return run_tasks(fn, tasks, config.workers, progress)
            finally:
                progress.close()

        mapped: list[_MapResult] = run("shard: examples", _map_file, map_tasks)
        _check_shard_counts(plan, mapped)
        write_tasks = []
        for split in SPLITS:
            results = [r for r in mapped if r.split == split]
            counts = np.array([r.counts for r in results]).reshape(
                len(results), config.shards_of(split)
            )
            plan_moves = balance(counts)
            for shard in range(config.shards_of(split)):
                write_tasks.append(
                    WriteTask(
                        split, shard, spill, str(out_dir), counts, plan_moves, config, vocab[1]
                    )
                )
        written: list[WriteResult] = run("shard: write", write_shard, write_tasks)
    if not any(w.rows for w in written if w.split == "train"):
        raise InputError(
            f"{plan.corpus.id}: no training examples (documents too short to pair? try a smaller"
            " --max-seq-len or --objective none)"
        )
    stats = _stats(plan, mapped, written, time.monotonic() - started)
    stats["warnings"] = _warnings(plan, stats)
    return stats, _layout(plan, written, vocab)


def _check_shard_counts(plan: ShardPlan, mapped: list[_MapResult]) -> None:
    """More shards than examples would publish empty shard files: refuse, with the numbers."""
    for split in SPLITS:
        examples = sum(r.examples for r in mapped if r.split == split)
        shards = plan.config.shards_of(split)
        if examples and shards > examples:
            option = "--num-shards" if split == "train" else "--num-validation-shards"
            raise InputError(
                f"{option} {shards} is more than the {examples:,} {split} examples "
                f"{plan.corpus.id} makes: {shards - examples:,} shards would be empty; use at most "
                f"{examples:,}"
            )


def _warnings(plan: ShardPlan, stats: dict[str, Any]) -> list[str]:
    """Pairs that are almost all random-next (NSP) or swapped (SOP) teach the pair objective
    nothing: it happens when max_seq_len leaves no room for a second segment from the same
    document."""
    warnings = []
    share = stats["train"]["random_next_share"]
    if plan.config.objective != "none" and share > MAX_RANDOM_NEXT_SHARE:
        warnings.append(
            f"{share:.0%} of the training pairs are random-next or swapped, not about half: at "
            f"--max-seq-len {plan.config.max_seq_len} one sentence fills most examples, so "
            f"the pair objective learns little; raise --max-seq-len or use --objective none"
        )
    return warnings


def _map_slices(
    store: ArtifactStore, corpus: Manifest, split: Split
) -> list[tuple[str, int, int, int]]:
    """(file, row group, slice, slices) of a split: the map tasks, about TASK_BYTES of text each.
    Derived from the corpus files' metadata alone, so the work's split never depends on workers;
    a random-next segment comes from another document of the same slice."""
    slices = []
    for path in split_files(corpus, split):
        with store.open(corpus.id, path, "rb") as f:
            metadata = pq.ParquetFile(f).metadata
        for group in range(metadata.num_row_groups):
            n = max(1, math.ceil(metadata.row_group(group).total_byte_size / TASK_BYTES))
            slices += [(path, group, i, n) for i in range(n)]
    return slices


def _read_tokenizer_files(
    store: ArtifactStore, tokenizer: Manifest, out_dir: Path
) -> tuple[list[str], int]:
    """Copy vocab.txt into the artifact; return (vocab tokens, vocab size), checking specials."""
    with store.open(tokenizer.id, "vocab.txt", "rb") as f:
        raw = f.read()
    tokens = raw.decode("utf-8").splitlines()
    missing = [t for t in SPECIAL_NAMES.values() if t not in tokens]
    if missing:
        raise InputError(f"{tokenizer.id}: the vocabulary lacks {', '.join(missing)}")
    if len(tokens) != tokenizer.stats["vocab_size"]:
        raise StoreError(f"{tokenizer.id}: vocab.txt does not match the manifest's vocab_size")
    (out_dir / VOCAB_FILE).write_bytes(raw)
    return tokens, len(tokens)


# -- map: examples from one corpus file ------------------------------------------------------------


@dataclass(frozen=True)
class _MapTask:
    store_url: str
    corpus: Manifest
    tokenizer_id: str
    split: Split
    file_index: int  # the task's number within its split: (file, row group) in order
    path: str
    row_group: int
    part: int  # this task's slice of the row group's documents, of `parts`
    parts: int
    config: ShardConfig
    spill: str


@dataclass
class _MapResult:
    split: Split
    file_index: int
    counts: list[int]  # examples per shard
    documents: int = 0
    sentences: int = 0
    examples: int = 0
    tokens: int = 0
    labels: dict[int, int] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)  # histogram, HISTOGRAM_BIN tokens per bin
    masked: int = 0
    maskable: int = 0


def _map_file(task: _MapTask, report: Report) -> _MapResult:
    config = task.config
    store = ArtifactStore(task.store_url)
    tokenizer = _load_tokenizer(task.store_url, task.tokenizer_id)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    docs = _tokenized_documents(store, task, tokenizer)
    n_shards = config.shards_of(task.split)
    result = _MapResult(task.split, task.file_index, [0] * n_shards, documents=len(docs))
    result.sentences = sum(len(d) for d in docs)
    writer = _PieceWriter(
        Path(task.spill), task.split, task.file_index, n_shards, config, tokenizer
    )
    offset = derive_seed(config.seed, "offset", task.split, task.file_index) % n_shards
    for dupe in range(int(config.dupe_factor or 1)):
        rng = python_rng(config.seed, "pairs", task.split, task.file_index, dupe)
        examples: list[Example] = []
        for index in range(len(docs)):
            examples.extend(
                document_examples(
                    docs,
                    index,
                    config.max_seq_len,
                    config.short_seq_prob,
                    config.objective,
                    rng,
                    cls_id,
                    sep_id,
                )
            )
        writer.add(examples, dupe, offset, result)
    writer.close()
    report(0, 1, len(docs))
    return result


@functools.lru_cache(maxsize=2)
def _load_tokenizer(store_url: str, tokenizer_id: str) -> Tokenizer:
    """The tokenizer, loaded once per process rather than once per map task."""
    with ArtifactStore(store_url).open(tokenizer_id, "tokenizer.json", "rb") as f:
        return Tokenizer.from_str(f.read().decode("utf-8"))


def _tokenized_documents(store: ArtifactStore, task: _MapTask, tokenizer: Tokenizer):
    """Documents of one corpus file as lists of token-id lists; empty sentences dropped."""
    with store.open(task.corpus.id, task.path, "rb") as f:
        table = pq.ParquetFile(f).read_row_group(task.row_group, columns=["sentences"])
    n = table.num_rows
    first, last = task.part * n // task.parts, (task.part + 1) * n // task.parts
    sentences = table.column("sentences").slice(first, last - first).combine_chunks()
    offsets = sentences.offsets.to_numpy()
    flat = sentences.values.slice(offsets[0], offsets[-1] - offsets[0]).to_pylist()
    offsets = offsets - offsets[0]
    # one call for the whole slice: tokenizers parallelises and amortises best over big batches
    ids = [e.ids for e in tokenizer.encode_batch_fast(flat, add_special_tokens=False)]
    docs = []
    for begin, end in zip(offsets[:-1], offsets[1:], strict=True):
        doc = [s for s in ids[begin:end] if s]
        if doc:
            docs.append(doc)
    return docs


class _PieceWriter:
    """Appends examples to the spill pieces of one corpus file, one Arrow file per shard."""

    def __init__(
        self,
        spill: Path,
        split: Split,
        file_index: int,
        n_shards: int,
        config: ShardConfig,
        tokenizer: Tokenizer,
    ):
        self.config = config
        self.vocab_size = tokenizer.get_vocab_size()
        self.schema = shard_schema(self.vocab_size, config.masking == "static")
        self.np_token = np.uint16 if token_type(self.vocab_size) == pa.uint16() else np.int32
        self.folder = spill / split
        self.split, self.file_index, self.n_shards = split, file_index, n_shards
        self.writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self.position = 0  # examples written so far, across passes
        if config.masking == "static":
            special, continuation = vocab_flags(
                [tokenizer.id_to_token(i) for i in range(self.vocab_size)]
            )
            self.rule = MaskingRule(
                mask_id=tokenizer.token_to_id(MASK),
                special=special,
                continuation=continuation,
                mlm_prob=config.mlm_prob,
                max_predictions=int(config.max_predictions or 1),
                whole_word=config.whole_word,
            )

    def add(self, examples: list[Example], dupe: int, offset: int, result: _MapResult) -> None:
        if not examples:
            return
        lengths = np.fromiter((len(e[0]) for e in examples), np.int64, len(examples))
        flat_ids = array.array("H" if self.np_token == np.uint16 else "i")
        for example in examples:
            flat_ids.extend(example[0])  # a C loop per example, not a Python one per token
        flat = np.frombuffer(flat_ids, dtype=self.np_token)
        columns = {
            "input_ids": flat,
            "lengths": lengths,
            "segment_a_len": np.fromiter((e[1] for e in examples), np.uint16, len(examples)),
            "next_sentence_label": np.fromiter((e[2] for e in examples), np.int8, len(examples)),
        }
        if self.config.masking == "static":
            self._mask(columns, dupe, result)
        _tally(result, columns)
        shard_of = (
            np.arange(self.position, self.position + len(examples)) + offset
        ) % self.n_shards
        self.position += len(examples)
        batch = self._batch(columns)
        for shard in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == shard)
            self._writer(int(shard)).write_batch(batch.take(pa.array(rows)))
            result.counts[int(shard)] += len(rows)

    def _mask(self, columns: dict[str, np.ndarray], dupe: int, result: _MapResult) -> None:
        """Static masking: the same rule the loader applies, seeded by (seed, split, file, pass)."""
        lengths, flat = columns["lengths"], columns["input_ids"]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        seed = derive_seed(self.config.seed, "static-mask", self.split, self.file_index, dupe)
        positions, originals, masked_flat = [], [], flat.copy()
        for chunk in range(0, len(lengths), MASK_CHUNK):
            rows = np.arange(chunk, min(len(lengths), chunk + MASK_CHUNK))
            width = int(lengths[rows].max())
            grid = np.full((len(rows), width), 0, dtype=np.int64)  # id 0 is [PAD]: special
            cols = np.arange(width)
            inside = cols[None, :] < lengths[rows][:, None]
            index = starts[rows][:, None] + cols[None, :]
            grid[inside] = flat[index[inside]]
            masked, labels = mask_batch(grid, self.rule, seed, rows)
            chosen = labels >= 0
            masked_flat[index[inside]] = masked[inside]
            for r in range(len(rows)):
                where = np.flatnonzero(chosen[r])
                positions.append(where.astype(np.uint16))
                originals.append(grid[r, where].astype(flat.dtype))
            result.masked += int(chosen.sum())
            result.maskable += int((~self.rule.special[grid] & inside).sum())
        columns["input_ids"] = masked_flat
        columns["masked_positions"] = positions
        columns["masked_ids"] = originals

    def _batch(self, columns: dict[str, Any]) -> pa.RecordBatch:
        lengths = columns["lengths"]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        token = self.schema.field("input_ids").type
        arrays = [
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(columns["input_ids"]), type=token),
            pa.array(columns["segment_a_len"], pa.uint16()),
            pa.array(columns["next_sentence_label"], pa.int8()),
            pa.array(lengths.astype(np.uint16), pa.uint16()),
        ]
        if self.config.masking == "static":
            arrays += [
                pa.array(columns["masked_positions"], self.schema.field("masked_positions").type),
                pa.array(columns["masked_ids"], self.schema.field("masked_ids").type),
            ]
        return pa.record_batch(arrays, schema=self.schema)

    def _writer(self, shard: int) -> pa.ipc.RecordBatchFileWriter:
        writer = self.writers.get(shard)
        if writer is None:
            path = self.folder / f"{shard:05d}" / f"{self.file_index:05d}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = self.writers[shard] = pa.ipc.new_file(str(path), self.schema)
        return writer

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def _tally(result: _MapResult, columns: dict[str, np.ndarray]) -> None:
    lengths = columns["lengths"]
    result.examples += len(lengths)
    result.tokens += int(lengths.sum())
    labels, counts = np.unique(columns["next_sentence_label"], return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
        result.labels[label] = result.labels.get(label, 0) + count
    histogram = np.bincount(lengths // HISTOGRAM_BIN)
    if len(histogram) > len(result.lengths):
        result.lengths += [0] * (len(histogram) - len(result.lengths))
    for i, n in enumerate(histogram.tolist()):
        result.lengths[i] += n


# -- stats and layout -----------------------------------------------------------------------------


def _stats(plan: ShardPlan, mapped: list[_MapResult], written: list[WriteResult], seconds: float):
    config = plan.config
    out: dict[str, Any] = {"seconds": round(seconds, 3)}
    for split in SPLITS:
        results = [r for r in mapped if r.split == split]
        shards = [w for w in written if w.split == split]
        examples = sum(r.examples for r in results)
        labels: dict[int, int] = {}
        for r in results:
            for label, n in r.labels.items():
                labels[label] = labels.get(label, 0) + n
        width = max((len(r.lengths) for r in results), default=0)
        histogram = [sum(r.lengths[i] for r in results if i < len(r.lengths)) for i in range(width)]
        rows = [w.rows for w in shards]
        out[split] = {
            "documents": sum(r.documents for r in results),
            "examples": examples,
            "tokens": sum(r.tokens for r in results),
            "random_next_share": round(labels.get(1, 0) / examples, 4) if examples else 0.0,
            "padding_share": round(
                sum(w.padding_share * w.rows for w in shards) / max(1, sum(rows)), 4
            ),
            "short_share": round(
                sum(histogram[: max(1, config.max_seq_len // 2 // HISTOGRAM_BIN)])
                / max(1, examples),
                4,
            ),
            "length_histogram": {
                f"{i * HISTOGRAM_BIN}-{(i + 1) * HISTOGRAM_BIN - 1}": n
                for i, n in enumerate(histogram)
                if n
            },
            "masked_share": (
                round(sum(r.masked for r in results) / max(1, sum(r.maskable for r in results)), 4)
                if config.masking == "static"
                else config.mlm_prob
            ),
            "shard_rows": {"min": min(rows, default=0), "max": max(rows, default=0)},
        }
    return out


def _layout(plan: ShardPlan, written: list[WriteResult], vocab: tuple[list[str], int]):
    tokens, size = vocab
    config = plan.config
    out_root = Path(written[0].path).parents[1] if written else Path(".")
    return {
        "splits": {
            split: [
                {
                    "path": Path(w.path).relative_to(out_root).as_posix(),
                    "rows": w.rows,
                    "tokens": w.tokens,
                }
                for w in sorted(written, key=lambda w: w.shard)
                if w.split == split
            ]
            for split in SPLITS
        },
        "token_type": str(token_type(size)),
        "vocab_size": size,
        "special_ids": {name: tokens.index(token) for name, token in SPECIAL_NAMES.items()},
        "max_seq_len": config.max_seq_len,
        "objective": config.objective,
        "masking": config.masking,
        "mlm_prob": config.mlm_prob,
        "max_predictions": config.max_predictions,
        "whole_word": config.whole_word,
        "seed": config.seed,
        "length_bins": config.length_bins,
    }


def shards_summary(stats: dict[str, Any], layout: dict[str, Any]) -> str:
    """One line on a shards artifact: its train examples, their length, shards and objective."""
    train = stats.get("train", {})
    return (
        f"{train.get('examples', 0):,} train examples of <= {layout.get('max_seq_len')} tokens"
        f" in {len(layout.get('splits', {}).get('train', []))} shards,"
        f" {layout.get('objective')}, {layout.get('masking')} masking"
    )


def shards_markdown(manifest: Manifest) -> str:
    """The shards' section of their Prefect record: examples by split, train lengths."""
    lines = [
        "## Examples",
        "",
        "| split | examples | tokens | random next | padding | masked |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split in ("train", "validation"):
        s = manifest.stats[split]
        lines.append(
            f"| {split} | {s['examples']:,} | {s['tokens']:,} | {s['random_next_share']:.1%}"
            f" | {s['padding_share']:.1%} | {s['masked_share']:.1%} |"
        )
    histogram = manifest.stats["train"]["length_histogram"]
    lines += ["", "## Train lengths (tokens)", "", "| length | examples |", "|---|---:|"]
    lines += [f"| {bucket} | {n:,} |" for bucket, n in histogram.items()]
    return "\n".join(lines)
