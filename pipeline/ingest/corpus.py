"""The corpus artifact's Parquet layout, declared once for its writer, its readers and the tests.

A corpus is `train/part-NNNNN.parquet` and `validation/part-NNNNN.parquet` files of documents,
each a list of cleaned sentences. Rows are ordered by `doc_id`, a hash of the document's text,
which spreads documents evenly and in a random-looking but fixed order across files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bertflow.pipeline.core.literals import Split
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore, StoreError

SPLITS: tuple[Split, ...] = ("train", "validation")

CORPUS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),  # 32 hex chars of blake2b-128
        pa.field("source", pa.string(), nullable=False),  # file (and line, row or title)
        pa.field(
            "sentences", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False
        ),
    ]
)

TARGET_ROW_GROUP_BYTES = 8 << 20
PARQUET_COMPRESSION = "zstd"


def write_corpus_file(table: pa.Table, path: Path) -> None:
    """Write one corpus file; row groups of about 8 MB let readers stream large files."""
    if table.schema != CORPUS_SCHEMA:
        raise ValueError(f"table schema {table.schema} is not the corpus schema")
    avg_row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    row_group_rows = max(16, TARGET_ROW_GROUP_BYTES // avg_row_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression=PARQUET_COMPRESSION, row_group_size=row_group_rows)


def split_files(manifest: Manifest, split: Split) -> list[str]:
    if manifest.kind != "corpus":
        raise StoreError(f"{manifest.id} is a {manifest.kind} artifact, not a corpus")
    return [f["path"] for f in manifest.layout["splits"][split]]


def iter_documents(
    store: ArtifactStore,
    manifest: Manifest,
    split: Split,
    batch_rows: int = 256,
    hash_below: str | None = None,
) -> Iterator[tuple[str, list[str]]]:
    """Yield (doc_id, sentences) of one split, one row group at a time (bounded memory).

    `hash_below` (hex digits) keeps only documents whose doc_id digits 16 onwards sort below it:
    a fixed, even sample, filtered in Arrow before any row becomes Python objects.
    """
    for relpath in split_files(manifest, split):
        with store.open(manifest.id, relpath) as f:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(
                batch_size=batch_rows, columns=["doc_id", "sentences"]
            ):
                if hash_below is not None:
                    digits = pc.utf8_slice_codeunits(batch.column(0), 16, 16 + len(hash_below))
                    batch = batch.filter(pc.less(digits, hash_below))
                yield from zip(
                    batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                )


def corpus_summary(stats: dict[str, Any]) -> str:
    """One line on a corpus: its documents by split and its sentences."""
    docs, sents = stats.get("documents", {}), stats.get("sentences", {})
    validation = "no validation (empty split)"
    if docs.get("validation"):
        validation = f"{docs['validation']:,} validation"
    return (
        f"{docs.get('train', 0):,} train / {validation} documents,"
        f" {sum(sents.values()):,} sentences"
    )
