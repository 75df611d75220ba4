"""The shard loader: batch layout, exact splitting over ranks and workers, masking, resuming."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bertflow.model.training.loader import (
    LoaderConfig,
    ShardDataset,
    make_dataloader,
    validation_config,
)
from bertflow.model.training.partition import consumer_segments, round_robin
from bertflow.pipeline.core.manifest import artifact_id
from bertflow.pipeline.core.seeds import derive_seed
from bertflow.pipeline.core.store import ArtifactStore, StoreError
from bertflow.pipeline.shards.format import VOCAB_FILE, masking_rule, shard_schema
from bertflow.pipeline.shards.masking import IGNORE_INDEX, mask_batch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(40)]
PIECES = [f"##p{i}" for i in range(20)]
VOCAB = SPECIALS + WORDS + PIECES
PAD, CLS, SEP, MASK = 0, 2, 3, 4
FIRST_WORD, FIRST_PIECE = len(SPECIALS), len(SPECIALS) + len(WORDS)
MAX_SEQ_LEN = 64
KEYS = {
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "labels",
    "next_sentence_label",
    "example_index",
}


@dataclass(frozen=True)
class Artifact:
    """A published shards artifact and what went into it, by global example index."""

    url: str
    id: str
    originals: dict[str, list[list[int]]]  # split -> unmasked ids
    segment_a: dict[str, list[int]]
    nsp: dict[str, list[int]]
    stored: dict[str, list[tuple[list[int], list[int], list[int]]]]  # static: ids, pos, masked


def sentence(rng: np.random.Generator) -> list[int]:
    """2-9 words, each a word token and 0-2 `##` pieces."""
    ids: list[int] = []
    for _ in range(rng.integers(2, 10)):
        ids.append(int(rng.integers(FIRST_WORD, FIRST_PIECE)))
        ids += rng.integers(FIRST_PIECE, len(VOCAB), size=rng.integers(0, 3)).tolist()
    return ids


def example(rng: np.random.Generator, objective: str) -> tuple[list[int], int, int]:
    a = sentence(rng)
    if objective == "none":
        return [CLS, *a, SEP], len(a) + 2, -1
    return [CLS, *a, SEP, *sentence(rng), SEP], len(a) + 2, int(rng.integers(0, 2))


def layout_for(masking: str, objective: str, mlm_prob: float) -> dict:
    return {
        "splits": {},
        "token_type": "uint16",
        "vocab_size": len(VOCAB),
        "special_ids": {"pad": PAD, "unk": 1, "cls": CLS, "sep": SEP, "mask": MASK},
        "max_seq_len": MAX_SEQ_LEN,
        "objective": objective,
        "masking": masking,
        "mlm_prob": mlm_prob,
        "max_predictions": 20,
        "whole_word": False,
        "seed": 0,
    }


def static_masks(
    examples: list[list[int]], layout: dict, first_index: int
) -> list[tuple[list[int], list[int], list[int]]]:
    """What the shard stage stores for static masking: (masked ids, positions, original ids)."""
    ids = np.zeros((len(examples), MAX_SEQ_LEN), dtype=np.int64)
    for i, e in enumerate(examples):
        ids[i, : len(e)] = e
    index = np.arange(first_index, first_index + len(examples))
    masked, labels = mask_batch(ids, masking_rule(layout, VOCAB), derive_seed(7, "static"), index)
    out = []
    for i, e in enumerate(examples):
        pos = np.flatnonzero(labels[i] != IGNORE_INDEX)
        out.append((masked[i, : len(e)].tolist(), pos.tolist(), labels[i, pos].tolist()))
    return out


def write_shard(path: Path, rows: list[tuple], static: bool) -> None:
    """Rows (ids, segment_a_len, label[, masked positions, masked ids]) as a zstd Parquet shard
    with row groups of 16, so reads cross row groups."""
    columns = {
        "input_ids": [r[0] for r in rows],
        "segment_a_len": [r[1] for r in rows],
        "next_sentence_label": [r[2] for r in rows],
        "num_tokens": [len(r[0]) for r in rows],
    }
    if static:
        columns |= {"masked_positions": [r[3] for r in rows], "masked_ids": [r[4] for r in rows]}
    table = pa.table(columns, schema=shard_schema(len(VOCAB), static))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=16, compression="zstd")


def write_split(folder: Path, split: str, counts: list[int], rows: list[tuple]) -> list[dict]:
    """Consecutive `rows` into shards of `counts` rows; the layout's entries for the split."""
    entries, begin = [], 0
    for k, n in enumerate(counts):
        path = f"{split}/shard-{k:05d}.parquet"
        write_shard(folder / path, rows[begin : begin + n], static=len(rows[begin]) == 5)
        tokens = sum(len(r[0]) for r in rows[begin : begin + n])
        entries.append({"path": path, "rows": n, "tokens": tokens})
        begin += n
    return entries


def publish_shards(
    store: ArtifactStore,
    counts: dict[str, list[int]],
    masking: str = "dynamic",
    objective: str = "nsp",
    mlm_prob: float = 0.15,
) -> Artifact:
    """Random examples in shards of `counts` rows per split, published as a shards artifact."""
    config = {"counts": counts, "masking": masking, "objective": objective, "mlm_prob": mlm_prob}
    aid = artifact_id("shards", config)
    layout = layout_for(masking, objective, mlm_prob)
    rng = np.random.default_rng(0)
    art = Artifact(store.url, aid, {}, {}, {}, {})
    with store.staging(aid) as folder:
        (folder / VOCAB_FILE).write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
        for split, split_counts in counts.items():
            made = [example(rng, objective) for _ in range(sum(split_counts))]
            art.originals[split] = [m[0] for m in made]
            art.segment_a[split] = [m[1] for m in made]
            art.nsp[split] = [m[2] for m in made]
            rows = made
            if masking == "static":  # stored ids are the masked ones, plus the masks
                art.stored[split] = static_masks(art.originals[split], layout, 0)
                rows = [
                    (s[0], *m[1:], *s[1:]) for m, s in zip(made, art.stored[split], strict=True)
                ]
            layout["splits"][split] = write_split(folder, split, split_counts, rows)
        store.publish(folder, aid, config=config, layout=layout)
    return art


@pytest.fixture(scope="module")
def module_store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    return ArtifactStore(str(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="module")
def nsp(module_store: ArtifactStore) -> Artifact:
    """Train: 5 shards (no whole-shard split over 4 consumers); validation: 4 shards (whole)."""
    return publish_shards(
        module_store, {"train": [67, 66, 66, 67, 66], "validation": [40, 39, 40, 40]}
    )


@pytest.fixture(scope="module")
def lopsided(module_store: ArtifactStore) -> Artifact:
    """Shards of very different sizes, so workers run out at different times; mlm_prob 0.3."""
    return publish_shards(
        module_store, {"train": [50, 50, 20, 20], "validation": [10, 10, 10]}, mlm_prob=0.3
    )


@pytest.fixture(scope="module")
def static(module_store: ArtifactStore) -> Artifact:
    """Static masks, objective "none" (one segment, no pair label)."""
    counts = {"train": [50, 49, 50], "validation": [20, 20], "test": []}
    return publish_shards(module_store, counts, masking="static", objective="none")


def dataset(art: Artifact, split: str = "train", **config) -> ShardDataset:
    return ShardDataset(art.url, art.id, split, LoaderConfig(**config))


def collect(ds: ShardDataset, workers: int) -> list[dict[str, torch.Tensor]]:
    return list(make_dataloader(ds, workers))


def by_example(batches: list[dict[str, torch.Tensor]]) -> dict[int, tuple[list, list]]:
    """example index -> (input ids, labels) without padding."""
    out = {}
    for b in batches:
        lengths = b["attention_mask"].sum(1)
        for i, index in enumerate(b["example_index"].tolist()):
            n = int(lengths[i])
            out[index] = (b["input_ids"][i, :n].tolist(), b["labels"][i, :n].tolist())
    return out


def originals(batch: dict[str, torch.Tensor]) -> np.ndarray:
    """The unmasked ids of a batch: labels where predicted, input ids elsewhere."""
    labels, ids = batch["labels"].numpy(), batch["input_ids"].numpy()
    return np.where(labels != IGNORE_INDEX, labels, ids)


def test_batches_have_bert_names_int64_tensors_and_padding_to_8(nsp):
    batches = list(dataset(nsp, batch_size=16))
    assert [len(b["example_index"]) for b in batches] == [16] * 20 + [12]  # 332 examples
    for b in batches:
        assert set(b) == KEYS
        assert all(t.dtype == torch.int64 for t in b.values())
        size, width = b["input_ids"].shape
        assert all(b[k].shape == (size, width) for k in ("token_type_ids", "attention_mask"))
        assert b["labels"].shape == (size, width) and b["next_sentence_label"].shape == (size,)
        index = b["example_index"].numpy()
        lengths = np.array([len(nsp.originals["train"][i]) for i in index])
        assert width % 8 == 0 and width - 8 < lengths.max() <= width
        assert (b["attention_mask"].sum(1).numpy() == lengths).all()
        pad = b["attention_mask"].numpy() == 0
        assert (b["input_ids"].numpy()[pad] == PAD).all()
        assert (b["labels"].numpy()[pad] == IGNORE_INDEX).all()
        for row, n, i in zip(originals(b), lengths, index, strict=True):
            assert row[:n].tolist() == nsp.originals["train"][i]
        assert b["next_sentence_label"].tolist() == [nsp.nsp["train"][i] for i in index]


def test_token_type_ids_are_0_through_the_first_sep_then_1_and_0_on_padding(nsp):
    for b in dataset(nsp, "validation", batch_size=8):
        for row, types, mask, i in zip(
            b["input_ids"],
            b["token_type_ids"],
            b["attention_mask"],
            b["example_index"],
            strict=True,
        ):
            a, n = nsp.segment_a["validation"][i], int(mask.sum())
            assert types[:a].eq(0).all() and types[a:n].eq(1).all() and types[n:].eq(0).all()
            assert row[a - 1] == SEP and SEP not in row[1 : a - 1].tolist()  # [SEP] never masked


@pytest.mark.parametrize("split", ["train", "validation"])  # 5 shards / 4 consumers; 4 / 4
def test_two_ranks_of_two_workers_see_every_example_exactly_once(nsp, split):
    total = len(nsp.originals[split])
    per_rank = []
    for rank in range(2):
        config = LoaderConfig(batch_size=8, shuffle=True)
        ds = ShardDataset(nsp.url, nsp.id, split, config, rank=rank, world_size=2)
        per_rank.append([i for b in collect(ds, 2) for i in b["example_index"].tolist()])
    seen = sorted(per_rank[0] + per_rank[1])
    assert seen == list(range(total))
    if split == "train":  # cut at example granularity: N//R or N//R + 1 per rank
        assert {len(p) for p in per_rank} <= {total // 2, total // 2 + 1}


def test_consumer_segments_tile_the_epoch_in_whole_shards_or_even_ranges():
    rng = np.random.default_rng(1)
    for shards, consumers in itertools.product(range(1, 9), range(1, 7)):
        rows = rng.integers(5, 7, size=shards)
        order = rng.permutation(shards)
        parts = [consumer_segments(rows, order, consumers, c) for c in range(consumers)]
        seen = sorted((s.shard, r) for p in parts for s in p for r in range(s.start, s.stop))
        assert seen == [(s, r) for s in range(shards) for r in range(rows[s])]
        sizes = [sum(s.rows for s in p) for p in parts]
        if shards % consumers:
            assert max(sizes) - min(sizes) <= 1
        else:  # each reads whole shards
            assert all(s.start == 0 and s.stop == rows[s.shard] for p in parts for s in p)


def in_turns(totals: list[int], first: int) -> list[int]:
    """The workers a DataLoader takes batches from, in order, starting with worker `first`."""
    left, order = list(totals), []
    while any(left):
        for w in [*range(first, len(left)), *range(first)]:
            if left[w]:
                order.append(w)
                left[w] -= 1
    return order


def test_round_robin_says_what_each_worker_gave_and_who_goes_on(lopsided):
    totals = [3, 7, 0, 5]
    order = in_turns(totals, 0)
    for batches in range(len(order) + 1):
        taken, turn = round_robin(totals, batches)
        assert taken == [order[:batches].count(w) for w in range(4)]
        left = [t - k for t, k in zip(totals, taken, strict=True)]
        assert in_turns(left, turn) == order[batches:]  # a fresh loader starting at `turn`


def test_dynamic_masks_15_percent_of_ordinary_tokens_80_10_10_never_specials(nsp):
    special = np.array([t in SPECIALS for t in VOCAB])
    chosen = predicted = masked = kept = 0
    for b in dataset(nsp, batch_size=32, epochs=3):
        orig, ids, labels = originals(b), b["input_ids"].numpy(), b["labels"].numpy()
        target = labels != IGNORE_INDEX
        candidates = (~special[orig] & (b["attention_mask"].numpy() == 1)).sum(1)
        low = np.minimum(20, np.maximum(1, np.floor(candidates * 0.15)))
        high = np.minimum(20, np.maximum(1, np.ceil(candidates * 0.15)))
        count = target.sum(1)
        assert ((count == low) | (count == high)).all()  # n * 15%, rounded one way or the other
        assert not target[special[orig]].any()
        assert not special[ids[target & (ids != MASK)]].any()  # random picks are ordinary
        chosen += candidates.sum()
        predicted += target.sum()
        masked += (ids[target] == MASK).sum()
        kept += (ids[target] == orig[target]).sum()
    assert predicted / chosen == pytest.approx(0.15, abs=0.01)
    assert masked / predicted == pytest.approx(0.8, abs=0.03)
    assert kept / predicted == pytest.approx(0.1 + 0.1 / 60, abs=0.025)  # random can be itself


def test_an_examples_mask_depends_on_seed_and_epoch_not_on_workers_or_batching(nsp):
    one = by_example(collect(dataset(nsp, batch_size=16), 0))
    two = by_example(collect(dataset(nsp, batch_size=7), 2))
    assert one == two and len(one) == 332
    later = dataset(nsp, batch_size=16)
    later.set_epoch(1)
    other = by_example(collect(later, 0))
    same = sum(one[i][1] == other[i][1] for i in one)
    assert same < 0.05 * len(one)


def test_whole_word_masking_masks_every_piece_of_a_chosen_word(nsp):
    multi_piece = 0
    for b in dataset(nsp, batch_size=32, whole_word=True):
        for orig, target in zip(originals(b), b["labels"].numpy() != IGNORE_INDEX, strict=True):
            word = (orig >= FIRST_WORD) & (orig < FIRST_PIECE)
            starts = np.flatnonzero(word)
            for s, e in zip(starts, [*starts[1:], len(orig)], strict=True):
                end = s + 1 + np.argmax(np.append(orig[s + 1 : e] < FIRST_PIECE, True))
                assert target[s:end].all() or not target[s:end].any()
                multi_piece += bool(end - s > 1 and target[s])
    assert multi_piece > 50


def test_static_masking_gives_the_stored_masks(static):
    batches = collect(ShardDataset(static.url, static.id, "train", LoaderConfig(batch_size=16)), 2)
    for b in batches:
        for row, labels, mask, i in zip(
            b["input_ids"], b["labels"], b["attention_mask"], b["example_index"], strict=True
        ):
            ids, positions, masked_ids = static.stored["train"][i]
            assert row[: int(mask.sum())].tolist() == ids
            expected = np.full(len(labels), IGNORE_INDEX)
            expected[positions] = masked_ids
            assert labels.tolist() == expected.tolist()
        assert b["next_sentence_label"].eq(-1).all()  # objective "none": no pair label
        assert b["token_type_ids"].eq(0).all()


@pytest.mark.parametrize("config", [LoaderConfig(masking="dynamic"), validation_config(16)])
def test_dynamic_masking_of_a_static_artifact_masks_the_stored_originals(static, config):
    for b in ShardDataset(static.url, static.id, "train", config):
        lengths = b["attention_mask"].sum(1)
        for row, i, n in zip(originals(b), b["example_index"], lengths, strict=True):
            assert row[: int(n)].tolist() == static.originals["train"][i]


def test_validation_preset_keeps_manifest_order_and_the_same_15_percent_masks(lopsided):
    def run(epoch: int) -> list[dict[str, torch.Tensor]]:
        ds = ShardDataset(lopsided.url, lopsided.id, "validation", validation_config(8))
        ds.set_epoch(epoch)
        return collect(ds, 0)

    first, later = run(0), run(5)
    assert [i for b in first for i in b["example_index"].tolist()] == list(range(30))
    assert by_example(first) == by_example(later)
    predicted = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in first)
    tokens = sum(int(b["attention_mask"].sum()) - 3 * len(b["labels"]) for b in first)
    assert predicted / tokens == pytest.approx(0.15, abs=0.02)  # not the artifact's 0.3


def test_endless_mode_runs_epoch_after_epoch_each_a_new_permutation(lopsided):
    batches = iter(dataset(lopsided, batch_size=10, epochs=None))
    epochs = []
    for _ in range(3):  # one worker: an epoch is 14 batches (140 examples)
        epochs.append([i for b in itertools.islice(batches, 14) for i in b["example_index"]])
    assert all(sorted(e) == list(range(140)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("artifact", "epochs"),
    [("lopsided", 2), ("lopsided", None), ("nsp", 1)],  # whole shards; ranges of examples
)
def test_a_resumed_loader_yields_exactly_the_batches_the_uninterrupted_one_would(
    request, artifact, epochs
):
    art = request.getfixturevalue(artifact)
    options = {"batch_size": 8, "shuffle_buffer": 20, "epochs": epochs}
    full = list(itertools.islice(make_dataloader(dataset(art, **options), 2), 40))
    # lopsided: workers get 100 and 40 examples (or 70 and 70), one runs out long before the other
    for stop in (1, 6, 17, len(full) - 3):
        loader = make_dataloader(dataset(art, **options), 2)
        head = list(itertools.islice(loader, stop))
        resumed = dataset(art, **options)
        resumed.load_state_dict(loader.state_dict())
        tail = list(itertools.islice(make_dataloader(resumed, 2), len(full) - stop))
        for got, want in zip(head + tail, full, strict=True):
            assert all(torch.equal(got[k], want[k]) for k in KEYS)


def test_a_full_pass_moves_the_loader_to_the_next_epoch(lopsided):
    loader = make_dataloader(dataset(lopsided, batch_size=16), 0)
    assert loader.state_dict()["epoch"] == 0
    list(loader)
    assert loader.state_dict() | {"order": None} == {
        "epoch": 1,
        "batches": 0,
        "num_workers": None,
        "order": None,
    }


def test_errors_say_what_is_wrong(nsp, static, module_store):
    with pytest.raises(ValueError, match="'test' split of .* has no shards"):
        ShardDataset(static.url, static.id, "test")
    with pytest.raises(ValueError, match="batch_size 200 is larger than the 166 examples rank 1"):
        ShardDataset(nsp.url, nsp.id, "train", LoaderConfig(batch_size=200), rank=1, world_size=2)
    corpus_id = artifact_id("corpus", {"source": "x"})
    with pytest.raises(StoreError, match="is a corpus artifact, not a shards artifact"):
        ShardDataset(module_store.url, corpus_id, "train")
    with pytest.raises(ValueError, match="stores no masks"):
        ShardDataset(nsp.url, nsp.id, "train", LoaderConfig(masking="static"))
    with pytest.raises(ValueError, match="stores static masks; mlm_prob/whole_word apply to"):
        ShardDataset(static.url, static.id, "train", LoaderConfig(mlm_prob=0.2))
    with pytest.raises(
        ValueError, match=r"batch_size\n  Input should be greater than or equal to 1"
    ):
        LoaderConfig(batch_size=0)
    with pytest.raises(ValueError, match="static takes no mlm_prob"):
        LoaderConfig(masking="static", mlm_prob=0.2)
    loader = make_dataloader(dataset(nsp, batch_size=16), 0)
    next(iter(loader))
    with pytest.raises(
        ValueError, match=r"taken with 1 loader workers .* make_dataloader\(dataset, 1"
    ):
        make_dataloader(dataset(nsp, batch_size=16), 2).load_state_dict(loader.state_dict())
    state = loader.state_dict()
    with pytest.raises(ValueError, match="stream order changed .*batch_size 16 -> 8"):
        dataset(nsp, batch_size=8).load_state_dict(state)


def test_reads_shards_from_an_s3_store_in_worker_processes(s3_env, nsp, module_store):
    remote = publish_shards(
        ArtifactStore(s3_env), {"train": [67, 66, 66, 67, 66], "validation": [40, 39, 40, 40]}
    )
    assert remote.id == nsp.id
    got = collect(dataset(remote, "validation", batch_size=16), 2)
    want = collect(dataset(nsp, "validation", batch_size=16), 2)
    assert len(got) == len(want) == 10
    for g, w in zip(got, want, strict=True):
        assert all(torch.equal(g[k], w[k]) for k in KEYS)


def padding(batches: list[dict[str, torch.Tensor]]) -> float:
    mask = torch.cat([b["attention_mask"].flatten() for b in batches])
    return 1.0 - float(mask.float().mean())


@pytest.mark.slow
def test_length_bins_cut_padding_and_keep_every_example_once_and_resume_exact(nsp):
    options = {"batch_size": 8, "shuffle_buffer": 64}
    plain = collect(dataset(nsp, **options), 2)
    binned = collect(dataset(nsp, length_bins=8, **options), 2)
    assert sorted(by_example(binned)) == sorted(by_example(plain))
    assert len(binned) == len(plain) and padding(binned) < padding(plain)
    full = list(make_dataloader(dataset(nsp, length_bins=8, **options), 2))
    loader = make_dataloader(dataset(nsp, length_bins=8, **options), 2)
    head = list(itertools.islice(loader, 5))
    resumed = dataset(nsp, length_bins=8, **options)
    resumed.load_state_dict(loader.state_dict())
    for got, want in zip(head + list(make_dataloader(resumed, 2)), full, strict=True):
        assert all(torch.equal(got[k], want[k]) for k in KEYS)
