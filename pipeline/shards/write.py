"""The shard stage's write step: the balance plan that evens the shards' row counts, and one
shard's write task (its pieces from every map task, the moved rows, a seeded shuffle, Parquet).
Computed from counts alone, so every write task agrees on the plan without talking to the others."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.pipeline.core.literals import Split
from bertflow.pipeline.core.parallel import Report
from bertflow.pipeline.core.seeds import derive_seed
from bertflow.pipeline.shards.config import ShardConfig
from bertflow.pipeline.shards.format import length_bin, shard_schema

# -- balancing ------------------------------------------------------------------------------------

# A move: (donor shard, file index, first row, end row, receiving shard); rows of the donor's piece.
Move = tuple[int, int, int, int, int]


def balance(counts: np.ndarray) -> list[Move]:
    """Moves that make shard totals N // S or N // S + 1 (the first N % S shards get one more).

    `counts` is (files, shards). Donors give the last rows of their pieces, highest file first;
    receivers take in shard order. Computed from counts alone, so every write task agrees.
    """
    n_files, n_shards = counts.shape
    totals = counts.sum(axis=0)
    base, extra = divmod(int(totals.sum()), n_shards)
    targets = np.array([base + (s < extra) for s in range(n_shards)])
    surplus: list[tuple[int, int, int, int]] = []  # (donor, file, start, end)
    for shard in range(n_shards):
        give = int(totals[shard] - targets[shard])
        for file in reversed(range(n_files)):
            if give <= 0:
                break
            take = min(give, int(counts[file, shard]))
            if take:
                end = int(counts[file, shard])
                surplus.append((shard, file, end - take, end))
                give -= take
    moves: list[Move] = []
    for shard in range(n_shards):
        need = int(targets[shard] - totals[shard])
        while need > 0:
            donor, file, start, end = surplus.pop()
            take = min(need, end - start)
            moves.append((donor, file, end - take, end, shard))
            if end - take > start:
                surplus.append((donor, file, start, end - take))
            need -= take
    return moves


# -- write: one shard -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteTask:
    split: Split
    shard: int
    spill: str
    out_dir: str
    counts: np.ndarray
    moves: list[Move]
    config: ShardConfig
    vocab_size: int


@dataclass(frozen=True)
class WriteResult:
    split: Split
    shard: int
    path: str
    rows: int
    tokens: int
    padding_share: float


def write_shard(task: WriteTask, report: Report) -> WriteResult:
    folder = Path(task.spill) / task.split
    pieces = []
    for file in range(task.counts.shape[0]):
        rows = int(task.counts[file, task.shard])
        if not rows:
            continue
        given = [m for m in task.moves if m[0] == task.shard and m[1] == file]
        keep_end = min([rows, *(m[2] for m in given)])
        if keep_end:
            pieces.append(_read_piece(folder, task.shard, file).slice(0, keep_end))
    for donor, file, start, end, receiver in task.moves:
        if receiver == task.shard:
            pieces.append(_read_piece(folder, donor, file).slice(start, end - start))
    schema = shard_schema(task.vocab_size, task.config.masking == "static")
    table = pa.concat_tables(pieces) if pieces else schema.empty_table()
    rng = np.random.default_rng(derive_seed(task.config.seed, "shuffle", task.split, task.shard))
    table = table.take(pa.array(rng.permutation(table.num_rows))).combine_chunks()
    path = Path(task.out_dir) / task.split / f"shard-{task.shard:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table, path, compression="zstd", row_group_size=max(1, min(8192, table.num_rows))
    )
    lengths = table.column("num_tokens").to_numpy()
    report(0, 1, 0)
    return WriteResult(
        task.split,
        task.shard,
        str(path),
        table.num_rows,
        int(lengths.sum()),
        padding_share(
            lengths, task.config.batch_size, task.config.length_bins, task.config.max_seq_len
        ),
    )


def _read_piece(folder: Path, shard: int, file: int) -> pa.Table:
    path = folder / f"{shard:05d}" / f"{file:05d}.arrow"
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def padding_share(
    lengths: np.ndarray, batch_size: int, bins: int = 1, max_seq_len: int = 512, multiple: int = 8
) -> float:
    """Share of padding in batches padded to their longest example (rounded up to `multiple`),
    as the loader pads them: consecutive examples, grouped by length bin first when binning."""
    if not len(lengths):
        return 0.0
    if bins > 1:
        lengths = lengths[np.argsort(length_bin(lengths, bins, max_seq_len), kind="stable")]
    padded = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start : start + batch_size]
        padded += len(batch) * int(math.ceil(batch.max() / multiple) * multiple)
    return round(1.0 - float(lengths.sum()) / padded, 4)
