"""Loader throughput: examples/s of one loader worker with dynamic masking, at lengths 128 and 512.

    python bench/loader.py [--examples 50000] [--batch-sizes 32 64] [--lengths 128 512]
                           [--shards 8] [--row-group 2048] [--workdir /tmp/bertflow-bench/loader]

Shards are synthetic but shaped like BERT's: a 30,522-token vocabulary (999 bracketed specials and
unused slots, a fifth of the rest `##` pieces), 90% of examples filling max_seq_len and 10% short
(Google's short_seq_prob), segment A a random share of each. They are written once per length into
a store under the workdir and reused. For each length and batch size it times one epoch of the
train split, shuffled and dynamically masked, read in-process (what one DataLoader worker does)
and through a DataLoader with one worker process (adding the hand-over of tensors through shared
memory); the first batch is left out of each timing, so worker start-up does not count. The goal
is 20,000 examples/s per worker at length 128.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bertflow.model.training.loader import LoaderConfig, ShardDataset, make_dataloader
from bertflow.pipeline.core.manifest import artifact_id
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.shards.format import VOCAB_FILE, shard_schema

VOCAB_SIZE = 30522
FIRST_ORDINARY = 999  # [PAD], [unused0..], [UNK], [CLS], [SEP], [MASK], ... as in BERT's vocab
SPECIAL_IDS = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
SHORT_SEQ_PROB = 0.1


def vocab() -> list[str]:
    names = {v: f"[{k.upper()}]" for k, v in SPECIAL_IDS.items()}
    tokens = [names.get(i, f"[unused{i}]") for i in range(FIRST_ORDINARY)]
    ordinary = VOCAB_SIZE - FIRST_ORDINARY
    pieces = ordinary // 5
    return tokens + [f"w{i}" for i in range(ordinary - pieces)] + [f"##p{i}" for i in range(pieces)]


def synthetic_table(rng: np.random.Generator, rows: int, max_len: int) -> pa.Table:
    """`rows` examples "[CLS] A [SEP] B [SEP]" of random ordinary tokens."""
    lengths = np.where(
        rng.random(rows) < SHORT_SEQ_PROB, rng.integers(8, max_len + 1, size=rows), max_len
    )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = rng.integers(FIRST_ORDINARY, VOCAB_SIZE, size=offsets[-1]).astype(np.uint16)
    segment_a = (2 + rng.random(rows) * (lengths - 4)).astype(np.int64)  # len("[CLS] A [SEP]")
    tokens[offsets[:-1]] = SPECIAL_IDS["cls"]
    tokens[offsets[:-1] + segment_a - 1] = SPECIAL_IDS["sep"]
    tokens[offsets[1:] - 1] = SPECIAL_IDS["sep"]
    schema = shard_schema(VOCAB_SIZE, static_masking=False)
    input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens))
    columns = [
        input_ids.cast(schema.field("input_ids").type),
        pa.array(segment_a, pa.uint16()),
        pa.array(rng.integers(0, 2, size=rows), pa.int8()),
        pa.array(lengths, pa.uint16()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def build_shards(store: ArtifactStore, examples: int, shards: int, max_len: int, group: int) -> str:
    """A shards artifact of synthetic examples (made once; later runs find it by its id)."""
    config = {"bench": "loader", "examples": examples, "shards": shards, "max_len": max_len}
    config["row_group"] = group
    aid = artifact_id("shards", config)
    if store.get(aid) is not None:
        return aid
    rng = np.random.default_rng(max_len)
    entries = []
    with store.staging(aid) as folder:
        (folder / VOCAB_FILE).write_text("\n".join(vocab()) + "\n", encoding="utf-8")
        (folder / "train").mkdir()
        for k in range(shards):
            rows = examples // shards + (k < examples % shards)
            table = synthetic_table(rng, rows, max_len)
            path = f"train/shard-{k:05d}.parquet"
            pq.write_table(table, folder / path, row_group_size=group, compression="zstd")
            tokens = int(pa.compute.sum(table.column("num_tokens")).as_py())
            entries.append({"path": path, "rows": rows, "tokens": tokens})
        layout = {
            "splits": {"train": entries, "validation": []},
            "token_type": "uint16",
            "vocab_size": VOCAB_SIZE,
            "special_ids": SPECIAL_IDS,
            "max_seq_len": max_len,
            "objective": "nsp",
            "masking": "dynamic",
            "mlm_prob": 0.15,
            "max_predictions": round(max_len * 0.15),
            "whole_word": False,
            "seed": 0,
        }
        store.publish(folder, aid, config=config, layout=layout)
    return aid


def examples_per_second(dataset: ShardDataset, workers: int | None) -> float:
    """One epoch, timed from the first batch on; workers None: iterate in this process."""
    batches = iter(dataset) if workers is None else iter(make_dataloader(dataset, workers))
    next(batches)
    started, examples = time.perf_counter(), 0
    for batch in batches:
        examples += len(batch["example_index"])
    return examples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--row-group", type=int, default=2048)
    parser.add_argument("--whole-word", action="store_true", help="also time whole-word masking")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bertflow-bench/loader"))
    args = parser.parse_args()
    store = ArtifactStore(str(args.workdir / "store"))
    print("| seq len | batch | masking | in-process ex/s | 1 worker ex/s | tokens/s (in-process) |")
    print("|---:|---:|---|---:|---:|---:|")
    for max_len in args.lengths:
        aid = build_shards(store, args.examples, args.shards, max_len, args.row_group)
        tokens = sum(e["tokens"] for e in store.require(aid).layout["splits"]["train"])
        maskings = [False, True] if args.whole_word else [False]
        for batch_size, whole_word in itertools.product(args.batch_sizes, maskings):
            config = LoaderConfig(batch_size=batch_size, whole_word=whole_word)
            dataset = ShardDataset(store.url, aid, "train", config)
            inline = examples_per_second(dataset, None)
            worker = examples_per_second(dataset, 1)
            masking = "dynamic, whole-word" if whole_word else "dynamic"
            per_token = inline * tokens / args.examples
            print(
                f"| {max_len} | {batch_size} | {masking} | {inline:,.0f} | {worker:,.0f} "
                f"| {per_token / 1e6:.1f}M |"
            )


if __name__ == "__main__":
    main()
