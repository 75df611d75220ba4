"""Who reads what of a split: the shard order of an epoch, each consumer's (rank x worker)
segments of the shards' rows, and the round-robin in which a DataLoader takes its workers'
batches. Pure arithmetic on row counts; `loader.py` says the rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertflow.pipeline.core.seeds import derive_seed


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of the split's shard number `shard` (its place in the manifest)."""

    shard: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def shard_order(num_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's shard order; the same on every rank and worker."""
    if not shuffle:
        return np.arange(num_shards)
    return np.random.default_rng(derive_seed(seed, "shards", epoch)).permutation(num_shards)


def consumer_segments(
    rows: np.ndarray, order: np.ndarray, consumers: int, consumer: int
) -> list[Segment]:
    """What one of `consumers` reads: whole shards when they divide evenly, else a contiguous
    range (sizes within one of each other) of the shards concatenated in `order`."""
    if len(order) % consumers == 0:
        per = len(order) // consumers
        mine = order[consumer * per : (consumer + 1) * per]
        return [Segment(int(s), 0, int(rows[s])) for s in mine if rows[s]]
    total = int(rows.sum())
    lo, hi = consumer * total // consumers, (consumer + 1) * total // consumers
    begins = np.concatenate([[0], np.cumsum(rows[order])])
    segments = []
    for k, shard in enumerate(order):
        start, stop = max(lo, begins[k]) - begins[k], min(hi, begins[k + 1]) - begins[k]
        if start < stop:
            segments.append(Segment(int(shard), int(start), int(stop)))
    return segments


def stream_pieces(segments: list[Segment], lo: int, hi: int) -> list[Segment]:
    """The parts of `segments` holding positions [lo, hi) of their concatenation."""
    pieces, begin = [], 0
    for seg in segments:
        a, b = max(lo - begin, 0), min(hi - begin, seg.rows)
        if a < b:
            pieces.append(Segment(seg.shard, seg.start + a, seg.start + b))
        begin += seg.rows
    return pieces


def round_robin(totals: list[int], batches: int) -> tuple[list[int], int]:
    """Batches each worker has yielded once a DataLoader has yielded `batches` of them in turn
    (worker 0, 1, ..., skipping workers that ran out), and whose turn comes next."""
    taken = [0] * len(totals)
    turn = 0
    while batches > 0:
        active = [w for w, total in enumerate(totals) if taken[w] < total]
        if not active:
            raise ValueError(f"position is {batches} batches past the end of the iteration")
        rounds = min(batches // len(active), min(totals[w] - taken[w] for w in active))
        if rounds:  # whole cycles from `turn` give each active worker one batch per cycle
            for w in active:
                taken[w] += rounds
            batches -= rounds * len(active)
            continue
        if taken[turn] < totals[turn]:
            taken[turn] += 1
            batches -= 1
        turn = (turn + 1) % len(totals)
    return taken, turn
