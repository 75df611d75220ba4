"""The loader that feeds a shards artifact to training: a PyTorch `IterableDataset` of batches.

`ShardDataset` yields whole collated batches (dicts of int64 tensors), so the DataLoader runs with
`batch_size=None` and no per-example Python sits between Parquet and the model: a row group's
list column becomes one flat array plus offsets, and a batch is a numpy gather. Use
`make_dataloader`. Batch keys are the ones HF BERT takes, plus `example_index`:

    input_ids (B, L)          token ids, masked for MLM; L is the longest example rounded up to
                              `pad_to_multiple`, padding is [PAD]
    token_type_ids (B, L)     0 through the first [SEP] (positions < segment_a_len), 1 after,
                              0 on padding
    attention_mask (B, L)     1 on tokens, 0 on padding
    labels (B, L)             the original id at predicted positions, -100 elsewhere
    next_sentence_label (B,)  0/1; -1 throughout for objective "none": the trainer skips the
                              NSP loss then (HF's loss would reject -1)
    example_index (B,)        the example's global id: its shard's row offset in the split + row

Who reads what. An epoch's examples are the split's shards concatenated (N examples). When
shuffling, the shard order is permuted first (seeded by (seed, epoch), the same on every rank).
The R ranks x W DataLoader workers are C = R*W consumers, consumer rank*W + worker:
- when C divides the number of shards, each consumer reads whole shards (shards hold the same
  number of rows give or take one, so consumers' counts differ by at most shards/C);
- otherwise the concatenation is cut into C contiguous ranges whose sizes differ by at most one,
  so a rank gets N//R or N//R + 1 examples.
Every example goes to exactly one (rank, worker) per epoch. Ranks can thus yield different numbers
of batches per epoch; the trainer runs by max_steps (`epochs=None`), so DDP never waits on it.
Each worker's last batch of an epoch can be short; no example is dropped.

Shuffling within a worker: its examples are read in blocks of `shuffle_buffer` examples (rounded
up to a multiple of batch_size) and each block is emitted in a random order seeded by (seed,
epoch, rank, worker, block). A block is the shuffle buffer: like a sliding buffer of that size it
mixes examples about that far apart, and unlike one, a position in the stream names its block,
so resuming reads one block instead of replaying the stream. Mixing across the whole split
comes from the shard order and from the shard stage having shuffled examples within shards.

Masking. Dynamic: `mask_batch` with seed derive_seed(seed, "mask", epoch) and the global example
index, so an example's mask depends on (seed, epoch) only, not on workers or batch-mates. With
`fixed_masking_seed` (validation) the seed ignores the epoch and mlm_prob defaults to 0.15, so
every evaluation sees the same masks. Static: the stored masked ids, labels from the stored
`masked_positions`/`masked_ids`. Dynamic masking of a static artifact first puts the stored
originals back.

Resuming. `make_dataloader` returns a `ShardLoader`, whose `state_dict()` is the position:
(epoch, batches the DataLoader has yielded since that epoch began); `load_state_dict()` on a new
loader (or dataset) makes its next iteration go on from there, with the same batches and masks.
A DataLoader takes worker batches in turn (0, 1, ..., skipping workers that have run out), and
each worker's batch count per epoch follows from the shard row counts, so each worker can tell
how many of its batches were taken and whose turn is next; a resumed worker skips whole epochs
by arithmetic and reads only the block it resumes in. Cost: one shuffle block per worker
(`shuffle_buffer` examples of Parquet), no replay. DDP ranks yield equal batch counts per step,
so rank 0's state resumes every rank.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bertflow.model.training.partition import (
    Segment,
    consumer_segments,
    round_robin,
    shard_order,
    stream_pieces,
)
from bertflow.model.training.shard_reader import COLUMNS, STATIC_COLUMNS, Rows, ShardReader
from bertflow.pipeline.core.literals import Masking, Split
from bertflow.pipeline.core.seeds import derive_seed
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.shards.format import VOCAB_FILE, length_bin, masking_rule, split_entries
from bertflow.pipeline.shards.masking import IGNORE_INDEX, MaskingRule, mask_batch

Batch = dict[str, torch.Tensor]
VALIDATION_MLM_PROB = 0.15
UNBOUNDED = 1 << 62  # batches a worker has in an endless iteration


class LoaderConfig(BaseModel):
    """How the loader batches, shuffles and masks one split of a shards artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(64, ge=1, description="Examples per batch (per rank).")
    seed: int = Field(0, description="Base seed of the shard order, shuffle blocks and masks.")
    shuffle: bool | None = Field(
        None, description="Shuffle shards and examples each epoch; None: the train split only."
    )
    shuffle_buffer: int = Field(
        8192, ge=1, description="Examples a worker shuffles together (a multiple of batch_size)."
    )
    masking: Masking | None = Field(
        None,
        description='None: the artifact\'s own; "dynamic" masks at load time, "static" uses '
        "the stored masks.",
    )
    mlm_prob: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Dynamic masking rate; None: the artifact's (0.15 with fixed_masking_seed).",
    )
    whole_word: bool | None = Field(
        None, description="Mask whole words (all ## pieces together); None: the artifact's."
    )
    fixed_masking_seed: int | None = Field(
        None,
        description="Validation: mask with this seed in every epoch, at 15% unless mlm_prob "
        "says otherwise.",
    )
    pad_to_multiple: int = Field(
        8, ge=1, description="Batch length: the longest example rounded up to this."
    )
    epochs: int | None = Field(
        1, ge=1, description="Epochs per iteration; None: endless, for training by max_steps."
    )
    length_bins: int | None = Field(
        None,
        ge=1,
        description="Length bins each shuffle block is grouped into before cutting batches, so "
        "batches pad little (LDDL-style); None: the artifact's `length_bins`; 1: no binning.",
    )

    @model_validator(mode="after")
    def _static_masks_are_what_they_are(self) -> LoaderConfig:
        if self.masking == "static" and (self.mlm_prob, self.whole_word) != (None, None):
            raise ValueError(
                "masking: static takes no mlm_prob or whole_word (stored masks are what they "
                "are); use masking='dynamic'"
            )
        if self.masking == "static" and self.fixed_masking_seed is not None:
            raise ValueError(
                "masking: static cannot go with fixed_masking_seed, which masks dynamically"
            )
        return self


def validation_config(batch_size: int = 64, seed: int = 0) -> LoaderConfig:
    """Validation: manifest order, the same 15% masks at every evaluation."""
    return LoaderConfig(batch_size=batch_size, shuffle=False, fixed_masking_seed=seed)


@dataclass(frozen=True)
class Position:
    """Where an iteration starts: `batches` the DataLoader has already yielded since `epoch`
    began, taken with `num_workers` workers (None: no batches taken yet)."""

    epoch: int
    batches: int = 0
    num_workers: int | None = None


class ShardDataset(IterableDataset):
    """Batches of one split of a shards artifact, for `make_dataloader` (see the module doc).

    rank/world_size default to torch.distributed's when it is initialised, else 0/1.
    """

    def __init__(
        self,
        store_url: str,
        shards_id: str,
        split: Split,
        config: LoaderConfig | None = None,
        *,
        epoch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.store_url, self.shards_id, self.split = store_url, shards_id, split
        self.config = config or LoaderConfig()
        self._store: tuple[int, ArtifactStore] | None = None
        manifest = self.store.require(shards_id, kind="shards")
        self.layout = manifest.layout
        self.paths, self.rows = _split_shards(manifest, split)
        self.offsets = np.concatenate([[0], np.cumsum(self.rows)[:-1]])  # global id of row 0
        self.rank, self.world_size = _distributed_slot(rank, world_size)
        self.shuffle = split == "train" if self.config.shuffle is None else self.config.shuffle
        self.masking = self._masking()
        self.rule = self._masking_rule()
        self.length_bins = self.config.length_bins or int(self.layout.get("length_bins", 1))
        self.position = Position(epoch)
        self._check_batch_size()

    # -- set-up ---------------------------------------------------------------------------------

    def _masking(self) -> Masking:
        """The config's masking, else dynamic for a fixed masking seed, else the artifact's."""
        c = self.config
        masking = c.masking or ("dynamic" if c.fixed_masking_seed is not None else None)
        masking = masking or self.layout["masking"]
        if masking == "static" and self.layout["masking"] != "static":
            raise ValueError(
                f"{self.shards_id} was made for dynamic masking and stores no masks; "
                "use masking='dynamic' (or None)"
            )
        if masking == "static" and (c.mlm_prob, c.whole_word) != (None, None):
            raise ValueError(
                f"{self.shards_id} stores static masks; mlm_prob/whole_word apply to dynamic "
                "masking: add masking='dynamic'"
            )
        return masking

    def _masking_rule(self) -> MaskingRule:
        with self.store.open(self.shards_id, VOCAB_FILE) as f:
            tokens = f.read().decode("utf-8").splitlines()
        overrides = {"mlm_prob": self.config.mlm_prob, "whole_word": self.config.whole_word}
        if self.config.fixed_masking_seed is not None and self.config.mlm_prob is None:
            overrides["mlm_prob"] = VALIDATION_MLM_PROB
        given = {k: v for k, v in overrides.items() if v is not None}
        return masking_rule(self.layout, tokens, **given)

    def fewest_per_rank(self) -> int:
        """The fewest examples any rank may get per epoch, whichever way the split is cut."""
        total, ranks = int(self.rows.sum()), self.world_size
        fewest = total // ranks
        if len(self.rows) % ranks == 0:  # whole shards are possible
            fewest = min(fewest, int(np.sort(self.rows)[: len(self.rows) // ranks].sum()))
        return fewest

    def _check_batch_size(self) -> None:
        """A rank must get at least one full batch, whichever way its examples are cut."""
        fewest = self.fewest_per_rank()
        if self.config.batch_size > fewest:
            raise ValueError(
                f"batch_size {self.config.batch_size} is larger than the {fewest} examples rank "
                f"{self.rank} of {self.world_size} may get from the {self.split!r} split of "
                f"{self.shards_id} ({int(self.rows.sum())} examples in {len(self.rows)} shards); "
                f"use a batch_size of at most {fewest}, or fewer ranks"
            )

    @property
    def store(self) -> ArtifactStore:
        """The store, made afresh in each process: fsspec's async filesystems (s3) must not be
        used across a fork, and forked DataLoader workers inherit this object unpickled."""
        if self._store is None or self._store[0] != os.getpid():
            self._store = (os.getpid(), ArtifactStore(self.store_url))
        return self._store[1]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    # -- position -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of `epoch`."""
        self.position = Position(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where the next iteration starts (a loader's `state_dict` says where it is now)."""
        return self.state_at(self.position)

    def state_at(self, position: Position) -> dict[str, Any]:
        return {
            "epoch": position.epoch,
            "batches": position.batches,
            "num_workers": position.num_workers,
            "order": self._order_fields(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start the next iteration where `state` was taken (same stream order required)."""
        mine = self._order_fields()
        changed = [k for k, v in state["order"].items() if mine.get(k) != v]
        if changed and state["batches"]:
            diffs = ", ".join(f"{k} {state['order'][k]!r} -> {mine.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume mid-epoch: the stream order changed ({diffs})")
        self.position = Position(state["epoch"], state["batches"], state["num_workers"])

    def _order_fields(self) -> dict[str, Any]:
        """What fixes the order of batches; a mid-epoch position means nothing without it."""
        c = self.config
        return {
            "shards_id": self.shards_id,
            "split": self.split,
            "world_size": self.world_size,
            "batch_size": c.batch_size,
            "seed": c.seed,
            "shuffle": self.shuffle,
            "shuffle_buffer": c.shuffle_buffer,
        }

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        """This worker's batches from `self.position` on (not a generator: the position is
        read when the DataLoader asks for the iterator)."""
        workers, physical = _worker_slot()
        start = self.position
        if start.batches and start.num_workers != workers:
            raise RuntimeError(
                f"the resume position was taken with {start.num_workers} loader workers; this "
                f"loader has {workers}: resume with make_dataloader(dataset, {start.num_workers})"
            )
        epochs = self._epochs(start.epoch)
        taken, turn = round_robin(self._worker_totals(epochs, workers), start.batches)
        worker = (physical + turn) % workers  # the first worker asked plays whoever's turn it is
        batches = self._worker_batches(epochs, worker, workers, skip=taken[worker])
        return batches if get_worker_info() else map(dict, batches)  # packed for the pipe only

    def _epochs(self, first: int) -> Iterator[int] | range:
        epochs = self.config.epochs
        return itertools.count(first) if epochs is None else range(first, first + epochs)

    def _segments(self, epoch: int, worker: int, workers: int) -> list[Segment]:
        order = shard_order(len(self.rows), self.config.seed, epoch, self.shuffle)
        consumer = self.rank * workers + worker
        return consumer_segments(self.rows, order, self.world_size * workers, consumer)

    def _batch_count(self, segments: list[Segment]) -> int:
        return -(-sum(s.rows for s in segments) // self.config.batch_size)

    def _worker_totals(self, epochs: Iterator[int] | range, workers: int) -> list[int]:
        if not isinstance(epochs, range):
            return [UNBOUNDED] * workers
        return [
            sum(self._batch_count(self._segments(e, w, workers)) for e in epochs)
            for w in range(workers)
        ]

    def _worker_batches(
        self, epochs: Iterator[int] | range, worker: int, workers: int, skip: int
    ) -> Iterator[Batch]:
        reader = ShardReader(self.store, self.shards_id, self.paths, self._columns())
        try:
            for epoch in epochs:
                segments = self._segments(epoch, worker, workers)
                count = self._batch_count(segments)
                if count == 0 and self.config.epochs is None:
                    raise ValueError(
                        f"loader worker {worker} of rank {self.rank} gets no examples: the "
                        f"{self.split!r} split has fewer shards/examples than ranks x workers"
                    )
                if skip >= count:  # resuming: this whole epoch was already taken
                    skip -= count
                    continue
                yield from self._read_epoch(reader, segments, epoch, worker, first=skip)
                skip = 0
        finally:
            reader.close()

    def _columns(self) -> list[str]:
        return COLUMNS + (STATIC_COLUMNS if self.layout["masking"] == "static" else [])

    def _block_size(self) -> int:
        """The shuffle buffer, a multiple of batch_size so no batch spans two blocks."""
        batch = self.config.batch_size
        return -(-self.config.shuffle_buffer // batch) * batch

    def _read_epoch(
        self, reader: ShardReader, segments: list[Segment], epoch: int, worker: int, first: int
    ) -> Iterator[Batch]:
        """Batches `first`, `first` + 1, ... of one worker's epoch."""
        total, size = sum(s.rows for s in segments), self._block_size()
        batch = self.config.batch_size
        seed = self._mask_seed(epoch)
        for lo in range(first * batch // size * size, total, size):
            pieces = stream_pieces(segments, lo, min(lo + size, total))
            rows = Rows.concat([self._read_rows(reader, p) for p in pieces])
            order = self._block_order(rows.tokens.lengths, epoch, worker, lo // size)
            for b in range(max(first * batch - lo, 0), len(order), batch):
                yield self.collate(rows, order[b : b + batch], seed)

    def _read_rows(self, reader: ShardReader, piece: Segment) -> Rows:
        return Rows.from_table(reader.read(piece), int(self.offsets[piece.shard]) + piece.start)

    def _block_order(self, lengths: np.ndarray, epoch: int, worker: int, block: int) -> np.ndarray:
        """The order a block's examples are batched in. With length bins, the (shuffled) block is
        grouped by bin, cut into batches and the full batches shuffled: each batch holds examples
        of similar length, and a block still makes ceil(size / batch_size) batches (resuming
        relies on that)."""
        size = len(lengths)
        key = derive_seed(self.config.seed, "buffer", epoch, self.rank, worker, block)
        rng = np.random.default_rng(key)
        order = rng.permutation(size) if self.shuffle else np.arange(size)
        if self.length_bins > 1:
            bins = length_bin(lengths[order], self.length_bins, self.layout["max_seq_len"])
            order = order[np.argsort(bins, kind="stable")]
            batch = self.config.batch_size
            full = size // batch * batch
            if self.shuffle and full:
                batches = order[:full].reshape(-1, batch)[rng.permutation(full // batch)]
                order = np.concatenate([batches.reshape(-1), order[full:]])
        return order

    def _mask_seed(self, epoch: int) -> int:
        if self.config.fixed_masking_seed is not None:
            return derive_seed(self.config.fixed_masking_seed, "validation-mask")
        return derive_seed(self.config.seed, "mask", epoch)

    def collate(self, rows: Rows, pick: np.ndarray, mask_seed: int) -> Batch:
        """Examples `pick` (B,) of `rows` as one padded, masked batch."""
        multiple = self.config.pad_to_multiple
        width = -(-int(rows.tokens.lengths[pick].max()) // multiple) * multiple
        ids, valid = rows.tokens.padded(pick, width, self.layout["special_ids"]["pad"])  # (B, L)
        index = rows.index[pick]
        labels = rows.stored_labels(pick, width) if rows.masked_positions is not None else None
        if self.masking == "dynamic":
            if labels is not None:  # a static artifact: put the originals back first
                ids = np.where(labels != IGNORE_INDEX, labels, ids)
            ids, labels = mask_batch(ids, self.rule, mask_seed, index)
        assert labels is not None
        second = np.arange(width)[None, :] >= rows.segment_a[pick][:, None]
        return PackedBatch.pack(
            {
                "input_ids": ids,
                "token_type_ids": second & valid,
                "attention_mask": valid,
                "labels": labels,
                "next_sentence_label": rows.nsp[pick],
                "example_index": index,
            }
        )


class PackedBatch(dict):
    """A batch (a dict of int64 tensors) whose tensors are views of one buffer, as it leaves a
    DataLoader worker: pickled as that buffer, by value, through the worker's pipe. torch's way,
    a shared-memory segment per tensor, costs about a millisecond per tensor, more than making
    the batch. Pinning pins the one buffer. Loaders hand on plain dicts."""

    def __init__(self, flat: torch.Tensor, shapes: dict[str, tuple[int, ...]]):
        sizes = [math.prod(shape) for shape in shapes.values()]
        parts = torch.split(flat, sizes)
        super().__init__(
            {k: p.view(shape) for (k, shape), p in zip(shapes.items(), parts, strict=True)}
        )
        self.flat, self.shapes = flat, shapes

    @classmethod
    def pack(cls, arrays: dict[str, np.ndarray]) -> PackedBatch:
        flat = np.concatenate([a.ravel() for a in arrays.values()], dtype=np.int64)
        return cls(torch.from_numpy(flat), {k: a.shape for k, a in arrays.items()})

    def __reduce__(self) -> tuple[Any, ...]:
        return _unpickle_batch, (self.flat.numpy(), self.shapes)

    def pin_memory(self) -> PackedBatch:
        return PackedBatch(self.flat.pin_memory(), self.shapes)


def _unpickle_batch(flat: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> PackedBatch:
    return PackedBatch(torch.from_numpy(flat), shapes)


def _split_shards(manifest: Any, split: str) -> tuple[list[str], np.ndarray]:
    """(paths, rows) of a split's shards, or a ValueError saying why there are none."""
    splits = manifest.layout.get("splits", {})
    if split not in splits:
        raise ValueError(f"{manifest.id} has no split {split!r}; splits: {sorted(splits)}")
    entries = split_entries(manifest, split)
    rows = np.array([e["rows"] for e in entries], dtype=np.int64)
    if not entries or not rows.sum():
        raise ValueError(
            f"the {split!r} split of {manifest.id} has no shards (or only empty ones); "
            f"shards per split: { {name: len(e) for name, e in splits.items()} }"
        )
    return [e["path"] for e in entries], rows


def _distributed_slot(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    rank, world_size = (0 if rank is None else rank), (1 if world_size is None else world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


def _worker_slot() -> tuple[int, int]:
    """(workers, this worker's id) of the DataLoader running us; (1, 0) in-process."""
    info = get_worker_info()
    return (1, 0) if info is None else (info.num_workers, info.id)


class ShardLoader(DataLoader):
    """A DataLoader over a ShardDataset that knows where it is.

    `state_dict()` is the position after the batches this loader's latest iteration yielded (or
    the dataset's start position before any); `load_state_dict()` makes the next iteration start
    there. An iteration starts at the dataset's position and uses it up: a full (finite) pass moves
    it to the next epoch, a pass abandoned early leaves the next one to start that epoch afresh.
    Lightning saves and restores loaders with these two methods.
    """

    dataset: ShardDataset
    _live: Position | None = None

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        start = self.dataset.position
        self._live = start
        batches = super().__iter__()  # workers take their copy of the dataset now
        self.dataset.set_epoch(start.epoch)
        return self._track(batches, start)

    def _track(self, batches: Iterator[Batch], start: Position) -> Iterator[Batch]:
        workers = max(1, self.num_workers)
        for count, batch in enumerate(batches, start.batches + 1):
            self._live = Position(start.epoch, count, workers)
            yield dict(batch)  # a plain dict: collection utilities rebuild dicts by their type
        if self.dataset.config.epochs is not None:
            self._live = Position(start.epoch + self.dataset.config.epochs)
            self.dataset.set_epoch(self._live.epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_at(self._live or self.dataset.position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        workers = max(1, self.num_workers)
        if state["batches"] and state["num_workers"] != workers:
            raise ValueError(
                f"the position was taken with {state['num_workers']} loader workers and this "
                f"loader has {workers}; make it with make_dataloader(dataset, "
                f"{state['num_workers']})"
            )
        self.dataset.load_state_dict(state)
        self._live = None


def make_dataloader(
    dataset: ShardDataset,
    num_workers: int = 0,
    *,
    pin_memory: bool = False,
    multiprocessing_context: str | None = None,
    loader_class: type[ShardLoader] = ShardLoader,
) -> ShardLoader:
    """A loader of the dataset's ready-made batches (`batch_size=None`: nothing to collate).

    Workers are forked (fast) from a single-threaded process and spawned when other threads run:
    a fork copies threads half-way (seen: workers forked from a process running a Prefect server
    died at start-up). `multiprocessing_context` overrides the choice.
    """
    if multiprocessing_context is None and num_workers and threading.active_count() > 1:
        multiprocessing_context = "spawn"
    return loader_class(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
