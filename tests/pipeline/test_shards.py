"""The shard stage without Prefect: determinism, balance, schema, static masking, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import ArtifactNotFound, ArtifactStore, StoreError
from bertflow.pipeline.ingest.stage import IngestConfig, ingest
from bertflow.pipeline.shards.format import shard_schema
from bertflow.pipeline.shards.stage import ShardConfig, make_shards
from bertflow.pipeline.shards.write import balance, padding_share
from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

SMALL = ShardConfig(max_seq_len=64, num_shards=4, num_validation_shards=2, workers=1)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> tuple[ArtifactStore, str, str]:
    """demo-small ingested and a small vocabulary trained on it, once for the module."""
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))
    corpus = ingest(store, IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=1))
    tokenizer = make_tokenizer(
        store, corpus.manifest.id, TokenizerConfig(vocab_size=1500, limit_alphabet=200)
    )
    return store, corpus.manifest.id, tokenizer.manifest.id


def shard_tables(store: ArtifactStore, shards_id: str, split: str = "train"):
    manifest = store.require(shards_id)
    return [
        pq.read_table(store.local_path(shards_id) / e["path"])
        for e in manifest.layout["splits"][split]
    ]


def test_shards_are_balanced_shuffled_and_follow_the_schema(upstream):
    store, corpus_id, tokenizer_id = upstream
    m = make_shards(store, corpus_id, tokenizer_id, SMALL).manifest
    assert m.upstream == {"corpus": corpus_id, "tokenizer": tokenizer_id}
    for split, n in (("train", 4), ("validation", 2)):
        tables = shard_tables(store, m.id, split)
        rows = [t.num_rows for t in tables]
        assert len(tables) == n and max(rows) - min(rows) <= 1
        assert rows == [e["rows"] for e in m.layout["splits"][split]]
        assert sum(rows) == m.stats[split]["examples"] > 0
        for t in tables:
            assert t.schema == shard_schema(1500, static_masking=False)
            lengths = t.column("num_tokens").to_numpy()
            assert lengths.max() <= 64
            assert (lengths == [len(x) for x in t.column("input_ids").to_pylist()]).all()
    # above a half: at 64 tokens many chunks are one long sentence, always paired at random
    assert 0.45 < m.stats["train"]["random_next_share"] < 0.85
    assert m.layout["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert (store.local_path(m.id) / "vocab.txt").read_text().startswith("[PAD]\n")


def test_output_bytes_do_not_depend_on_the_worker_count(upstream, tmp_path):
    store, corpus_id, tokenizer_id = upstream
    outputs = []
    for workers in (1, 2):
        run_store = ArtifactStore(str(tmp_path / f"w{workers}"))
        for kind, artifact in (("corpus", corpus_id), ("tokenizer", tokenizer_id)):
            (tmp_path / f"w{workers}" / kind).mkdir(parents=True)
            (tmp_path / f"w{workers}" / kind / artifact).symlink_to(store.local_path(artifact))
        m = make_shards(
            run_store, corpus_id, tokenizer_id, SMALL.model_copy(update={"workers": workers})
        ).manifest
        outputs.append((m.id, m.files))
    assert outputs[0] == outputs[1]


def test_static_masking_stores_masks_at_about_15_percent(upstream):
    store, corpus_id, tokenizer_id = upstream
    config = SMALL.model_copy(update={"masking": "static", "dupe_factor": 2})
    m = make_shards(store, corpus_id, tokenizer_id, config).manifest
    assert abs(m.stats["train"]["masked_share"] - 0.15) < 0.02
    table = pa.concat_tables(shard_tables(store, m.id))
    assert table.schema == shard_schema(1500, static_masking=True)
    mask_id = m.layout["special_ids"]["mask"]
    masked_tokens = total = 0
    for ids, positions, originals in zip(
        table.column("input_ids").to_pylist(),
        table.column("masked_positions").to_pylist(),
        table.column("masked_ids").to_pylist(),
        strict=True,
    ):
        assert len(positions) <= m.layout["max_predictions"] and all(
            0 < p < len(ids) for p in positions
        )
        masked_tokens += sum(ids[p] == mask_id for p in positions)
        total += len(positions)
        assert all(o > 4 for o in originals)  # originals are never special tokens
    assert abs(masked_tokens / total - 0.8) < 0.05
    dynamic = make_shards(store, corpus_id, tokenizer_id, SMALL).manifest
    assert m.stats["train"]["examples"] > 1.5 * dynamic.stats["train"]["examples"]  # two passes


def test_sentence_order_and_no_pair_objectives(upstream):
    store, corpus_id, tokenizer_id = upstream
    sop = make_shards(store, corpus_id, tokenizer_id, SMALL.model_copy(update={"objective": "sop"}))
    assert 0.4 < sop.manifest.stats["train"]["random_next_share"] < 0.6  # swapped share
    none = make_shards(
        store, corpus_id, tokenizer_id, SMALL.model_copy(update={"objective": "none"})
    )
    labels = pa.concat_tables(shard_tables(store, none.manifest.id)).column("next_sentence_label")
    assert set(labels.to_pylist()) == {-1}


def test_rerun_is_cached(upstream):
    store, corpus_id, tokenizer_id = upstream
    first = make_shards(store, corpus_id, tokenizer_id, SMALL)
    again = make_shards(store, corpus_id, tokenizer_id, SMALL.model_copy(update={"workers": 2}))
    assert again.cached and again.manifest == first.manifest


def test_balance_plan_evens_out_any_counts():
    rng = np.random.default_rng(0)
    for _ in range(200):
        files, shards = rng.integers(1, 6), rng.integers(1, 9)
        counts = rng.integers(0, 20, size=(files, shards))
        moves = balance(counts)
        totals = counts.sum(axis=0).astype(int)
        for donor, file, start, end, receiver in moves:
            assert 0 <= start < end <= counts[file, donor]
            totals[donor] -= end - start
            totals[receiver] += end - start
        base, extra = divmod(int(counts.sum()), int(shards))
        assert totals.tolist() == [base + (s < extra) for s in range(shards)]
        given = sorted((d, f, s, e) for d, f, s, e, _ in moves)
        for (d1, f1, _, e1), (d2, f2, s2, _) in zip(given, given[1:], strict=False):
            assert (d1, f1) != (d2, f2) or e1 <= s2  # no row moves twice


def shards_in(store: ArtifactStore) -> list[str]:
    return [m.id for m in store.list("shards")]


def test_bad_upstream_ids_are_clear_errors(upstream):
    store, corpus_id, tokenizer_id = upstream
    before = shards_in(store)
    with pytest.raises(ArtifactNotFound, match="no artifact corpus-0000"):
        make_shards(store, "corpus-" + "0" * 20, tokenizer_id, SMALL)
    with pytest.raises(StoreError, match="is a tokenizer artifact, not a corpus"):
        make_shards(store, tokenizer_id, tokenizer_id, SMALL)
    with pytest.raises(StoreError, match="is a corpus artifact, not a tokenizer"):
        make_shards(store, corpus_id, corpus_id, SMALL)
    assert shards_in(store) == before


def test_a_tokenizer_without_bert_special_tokens_is_refused(upstream, tmp_path):
    """A tokenizer artifact published without [MASK] (by another tool, or an older version)."""
    from bertflow.pipeline.core.manifest import artifact_id

    store, corpus_id, tokenizer_id = upstream
    made = store.require(tokenizer_id)
    foreign = artifact_id("tokenizer", {"foreign": True}, upstream={"corpus": corpus_id})
    with store.staging(foreign) as staging:
        for f in made.files:
            (staging / f.path).write_bytes((store.local_path(tokenizer_id) / f.path).read_bytes())
        vocab = (staging / "vocab.txt").read_text().splitlines()
        (staging / "vocab.txt").write_text("\n".join(t for t in vocab if t != "[MASK]") + "\n")
        store.publish(
            staging,
            foreign,
            config={"foreign": True},
            upstream=made.upstream,
            stats=made.stats,
            layout=made.layout,
        )
    before = shards_in(store)
    with pytest.raises(InputError, match=r"lacks \[MASK\]"):
        make_shards(store, corpus_id, foreign, SMALL)
    assert shards_in(store) == before


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_seq_len", 8),
        ("max_seq_len", 100_000),
        ("mlm_prob", 0.0),
        ("mlm_prob", 1.5),
        ("short_seq_prob", -0.1),
        ("num_shards", 0),
        ("dupe_factor", 0),
    ],
)
def test_config_rejects_out_of_range_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ShardConfig(**{field: value})


def test_length_bins_lower_the_padding_share_and_reach_the_loader(upstream):
    lengths = np.random.default_rng(0).integers(8, 129, size=4096)
    assert padding_share(lengths, 32, bins=8, max_seq_len=128) < padding_share(lengths, 32) / 3
    store, corpus_id, tokenizer_id = upstream
    binned = make_shards(
        store, corpus_id, tokenizer_id, SMALL.model_copy(update={"length_bins": 4})
    ).manifest
    assert binned.layout["length_bins"] == 4


def test_more_shards_than_examples_is_refused_with_the_numbers(upstream):
    store, corpus_id, tokenizer_id = upstream
    before = store.list("shards")
    config = ShardConfig(max_seq_len=64, num_shards=5000, num_validation_shards=2, workers=1)
    said = r"--num-shards 5000 is more than the [\d,]+ train examples .* would be empty; use at"
    with pytest.raises(InputError, match=said):
        make_shards(store, corpus_id, tokenizer_id, config)
    assert store.list("shards") == before


def test_examples_too_short_for_pairs_are_published_with_a_warning(upstream):
    store, corpus_id, tokenizer_id = upstream
    normal = make_shards(store, corpus_id, tokenizer_id, SMALL).manifest
    assert normal.stats["warnings"] == []
    short = ShardConfig(max_seq_len=16, num_shards=2, num_validation_shards=1, workers=1)
    manifest = make_shards(store, corpus_id, tokenizer_id, short).manifest
    share = manifest.stats["train"]["random_next_share"]
    (warning,) = manifest.stats["warnings"]
    assert share > 0.9 and warning.startswith(f"{share:.0%} of the training pairs are random-next")
    with pytest.raises(ValueError, match="max_seq_len"):
        ShardConfig(max_seq_len=8)
