"""Rows of a shards artifact in memory: a list column as one flat array plus offsets (`Ragged`), a
block of rows (`Rows`), and the reader that fetches a segment's row groups from any store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.model.training.partition import Segment
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.shards.masking import IGNORE_INDEX

STATIC_COLUMNS = ["masked_positions", "masked_ids"]
COLUMNS = ["input_ids", "segment_a_len", "next_sentence_label"]


@dataclass(frozen=True)
class Ragged:
    """Variable-length lists end to end: list i is values[starts[i] : starts[i] + lengths[i]]."""

    values: np.ndarray  # (T,)
    starts: np.ndarray  # (n,) int64
    lengths: np.ndarray  # (n,) int64

    @classmethod
    def from_arrow(cls, column: pa.ChunkedArray) -> Ragged:
        lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        offsets = lists.offsets.to_numpy().astype(np.int64)  # absolute, even for a slice
        values = lists.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy()
        return cls(values, offsets[:-1] - offsets[0], np.diff(offsets))

    @staticmethod
    def concat(parts: list[Ragged]) -> Ragged:
        if len(parts) == 1:
            return parts[0]
        shifts = np.cumsum([0] + [len(p.values) for p in parts[:-1]])
        return Ragged(
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.starts + shift for p, shift in zip(parts, shifts, strict=True)]),
            np.concatenate([p.lengths for p in parts]),
        )

    def padded(self, pick: np.ndarray, width: int, fill: int) -> tuple[np.ndarray, np.ndarray]:
        """Lists `pick` (B,) as int64 (B, width) padded with `fill`, and the bool mask of items."""
        columns = np.arange(width)
        valid = columns[None, :] < self.lengths[pick][:, None]
        at = np.where(valid, self.starts[pick][:, None] + columns[None, :], 0)
        return np.where(valid, self.values[at], fill).astype(np.int64), valid

    def flat(self, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `pick`, value) for every item of lists `pick`, each (T',)."""
        lengths = self.lengths[pick]
        row = np.repeat(np.arange(len(pick)), lengths)
        within = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return row, self.values[np.repeat(self.starts[pick], lengths) + within]


@dataclass(frozen=True)
class Rows:
    """Examples read from shards, in stream order."""

    tokens: Ragged
    segment_a: np.ndarray  # (n,) int64
    nsp: np.ndarray  # (n,) int64
    index: np.ndarray  # (n,) int64, global example ids
    masked_positions: Ragged | None = None  # static artifacts only
    masked_ids: Ragged | None = None

    @classmethod
    def from_table(cls, table: pa.Table, first_index: int) -> Rows:
        static = "masked_positions" in table.column_names

        def ragged(name: str) -> Ragged | None:
            return Ragged.from_arrow(table.column(name)) if static else None

        return cls(
            tokens=Ragged.from_arrow(table.column("input_ids")),
            segment_a=table.column("segment_a_len").to_numpy().astype(np.int64),
            nsp=table.column("next_sentence_label").to_numpy().astype(np.int64),
            index=np.arange(first_index, first_index + table.num_rows, dtype=np.int64),
            masked_positions=ragged("masked_positions"),
            masked_ids=ragged("masked_ids"),
        )

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        if len(parts) == 1:
            return parts[0]
        static = parts[0].masked_positions is not None
        return Rows(
            tokens=Ragged.concat([p.tokens for p in parts]),
            segment_a=np.concatenate([p.segment_a for p in parts]),
            nsp=np.concatenate([p.nsp for p in parts]),
            index=np.concatenate([p.index for p in parts]),
            masked_positions=Ragged.concat([p.masked_positions for p in parts]) if static else None,
            masked_ids=Ragged.concat([p.masked_ids for p in parts]) if static else None,
        )

    def stored_labels(self, pick: np.ndarray, width: int) -> np.ndarray:
        """(B, width) labels of a static artifact: the stored original ids at masked positions."""
        assert self.masked_positions is not None and self.masked_ids is not None
        row, positions = self.masked_positions.flat(pick)
        _, ids = self.masked_ids.flat(pick)
        labels = np.full((len(pick), width), IGNORE_INDEX, dtype=np.int64)
        labels[row, positions.astype(np.int64)] = ids
        return labels


class ShardReader:
    """Row ranges of a split's shards, a row group at a time. It keeps the last row group it
    decoded, so ranges asked for in order read each row group once."""

    def __init__(
        self, store: ArtifactStore, artifact_id: str, paths: list[str], columns: list[str]
    ):
        self.store, self.artifact_id, self.paths, self.columns = store, artifact_id, paths, columns
        self._shard: int | None = None
        self._file: Any = None
        self._parquet: pq.ParquetFile | None = None
        self._group_starts = np.zeros(1, dtype=np.int64)
        self._cached: tuple[int, pa.Table] | None = None

    def read(self, piece: Segment) -> pa.Table:
        self._open(piece.shard)
        first = int(np.searchsorted(self._group_starts, piece.start, side="right")) - 1
        tables, row = [], piece.start
        for group in range(first, len(self._group_starts) - 1):
            if row >= piece.stop:
                break
            begin, end = self._group_starts[group], self._group_starts[group + 1]
            take = min(piece.stop, end) - row
            tables.append(self._row_group(group).slice(row - begin, take))
            row += take
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _open(self, shard: int) -> None:
        if shard == self._shard:
            return
        self.close()
        self._file = self.store.open(self.artifact_id, self.paths[shard])
        self._parquet = pq.ParquetFile(self._file)
        meta = self._parquet.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._shard = shard

    def _row_group(self, group: int) -> pa.Table:
        if self._cached is None or self._cached[0] != group:
            assert self._parquet is not None
            self._cached = (group, self._parquet.read_row_group(group, columns=self.columns))
        return self._cached[1]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._shard, self._file, self._parquet, self._cached = None, None, None, None
