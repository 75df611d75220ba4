"""The tokenizer stage without Prefect: BERT conventions, determinism, round trips, bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import ArtifactNotFound, ArtifactStore, StoreError
from bertflow.pipeline.ingest.stage import IngestConfig, ingest
from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer

SMALL = TokenizerConfig(vocab_size=1500, limit_alphabet=200)


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory) -> tuple[ArtifactStore, str]:
    """demo-small ingested once for the module: 24 speeches, a fifth held out."""
    store = ArtifactStore(str(tmp_path_factory.mktemp("store")))
    config = IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=1)
    return store, ingest(store, config).manifest.id


def load(store: ArtifactStore, tokenizer_id: str) -> Tokenizer:
    return Tokenizer.from_file(str(store.local_path(tokenizer_id) / "tokenizer.json"))


def test_special_tokens_come_first_and_pairs_are_post_processed(corpus_store):
    store, corpus_id = corpus_store
    published = make_tokenizer(store, corpus_id, SMALL)
    tok = load(store, published.manifest.id)
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    single = tok.encode("The Congress met.")
    assert single.tokens[0] == "[CLS]" and single.tokens[-1] == "[SEP]"
    assert set(single.type_ids) == {0}
    pair = tok.encode("The Congress met.", "It adjourned.")
    first_sep = pair.tokens.index("[SEP]")
    assert pair.tokens[-1] == "[SEP]" and pair.tokens.count("[SEP]") == 2
    assert pair.type_ids == [0] * (first_sep + 1) + [1] * (len(pair.ids) - first_sep - 1)
    assert tok.encode("[MASK] and [CLS]").tokens[1:-1][::2] == ["[MASK]", "[CLS]"]
    lines = (store.local_path(published.manifest.id) / "vocab.txt").read_text().splitlines()
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(lines) == tok.get_vocab_size() == published.manifest.stats["vocab_size"] <= 1500


def test_stats_report_unknown_rate_pieces_per_word_and_sample(corpus_store):
    store, corpus_id = corpus_store
    stats = make_tokenizer(store, corpus_id, SMALL).manifest.stats
    assert stats["validation_sentences"] > 100
    assert 0 <= stats["unk_rate"] < 0.01
    assert 1.0 <= stats["pieces_per_word"] < 2.0 and 0.5 < stats["whole_word_share"] <= 1.0
    assert stats["sample_fraction"] == 1.0 and stats["sampled_bytes"] > 0
    assert stats["top_tokens"][0][1] >= stats["top_tokens"][-1][1]
    assert stats["examples"] and stats["examples"][0]["tokens"]


TRAIN_IN_SUBPROCESS = """
import sys
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.tokenizer.stage import TokenizerConfig, make_tokenizer
store, corpus_id, threads = ArtifactStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
config = TokenizerConfig(vocab_size=1500, limit_alphabet=200, threads=threads)
print(make_tokenizer(store, corpus_id, config).manifest.id)
"""


def test_vocabulary_is_byte_identical_across_processes_and_thread_counts(corpus_store, tmp_path):
    """The trainer alone numbers pieces in hash-map order; the stage must not."""
    store, corpus_id = corpus_store
    outputs = []
    for run, threads in enumerate((1, 2, 2)):
        run_store = tmp_path / f"run{run}"
        corpus_dir = store.local_path(corpus_id)
        (run_store / "corpus").mkdir(parents=True)
        (run_store / "corpus" / corpus_id).symlink_to(corpus_dir)
        tokenizer_id = subprocess.run(
            [sys.executable, "-c", TRAIN_IN_SUBPROCESS, str(run_store), corpus_id, str(threads)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        folder = run_store / "tokenizer" / tokenizer_id
        outputs.append(
            ((folder / "vocab.txt").read_bytes(), (folder / "tokenizer.json").read_bytes())
        )
    assert outputs[0] == outputs[1] == outputs[2]


def test_transformers_loads_the_folder_and_gives_the_same_ids(corpus_store):
    from transformers import BertTokenizerFast

    store, corpus_id = corpus_store
    for lowercase in (True, False):
        config = SMALL.model_copy(update={"lowercase": lowercase})
        tokenizer_id = make_tokenizer(store, corpus_id, config).manifest.id
        ours = load(store, tokenizer_id)
        theirs = BertTokenizerFast.from_pretrained(str(store.local_path(tokenizer_id)))
        for a, b in [
            ("Café SOCIETY in the Union.", None),
            ("The PRESIDENT spoke.", "Congress ÉTAIT là."),
        ]:
            expected = ours.encode(a, b) if b else ours.encode(a)
            got = theirs(a, b) if b else theirs(a)
            assert got["input_ids"] == expected.ids
            assert got["token_type_ids"] == expected.type_ids
        assert theirs.mask_token == "[MASK]" and theirs.pad_token_id == 0
        ids = ours.encode("President Lincoln").ids
        decoded = "president lincoln" if lowercase else "President Lincoln"
        assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids) == decoded


def test_sample_cap_bounds_the_training_data(corpus_store):
    store, corpus_id = corpus_store
    corpus = store.require(corpus_id)
    total = corpus.stats["characters"]["train"]
    stats = make_tokenizer(store, corpus_id, SMALL.model_copy(update={"sample_bytes": total // 4}))
    sampled = stats.manifest.stats
    assert sampled["sample_fraction"] == pytest.approx(0.25, abs=1e-3)
    assert 0 < sampled["sampled_documents"] < corpus.stats["documents"]["train"]
    assert sampled["sampled_bytes"] < total * 0.7  # whole documents, so only roughly a quarter


def test_imported_vocab_gives_an_equivalent_tokenizer(corpus_store, tmp_path):
    store, corpus_id = corpus_store
    trained = make_tokenizer(store, corpus_id, SMALL).manifest
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_bytes((store.local_path(trained.id) / "vocab.txt").read_bytes())
    imported = make_tokenizer(store, corpus_id, TokenizerConfig(vocab=str(vocab_file))).manifest
    assert imported.id != trained.id and imported.stats["imported_vocab"] is True
    assert imported.inputs[0].fingerprint.startswith("sha256:")
    text = "The Congress of the United States assembled in December."
    assert load(store, imported.id).encode(text).ids == load(store, trained.id).encode(text).ids


def test_rerun_is_cached(corpus_store):
    store, corpus_id = corpus_store
    first = make_tokenizer(store, corpus_id, SMALL)
    again = make_tokenizer(store, corpus_id, SMALL.model_copy(update={"threads": 1}))
    assert again.cached and again.manifest == first.manifest


def tokenizers_in(store: ArtifactStore) -> list[str]:
    return [m.id for m in store.list("tokenizer")]


def test_bad_upstream_ids_are_clear_errors(corpus_store):
    store, corpus_id = corpus_store
    with pytest.raises(ArtifactNotFound, match="no artifact corpus-0000"):
        make_tokenizer(store, "corpus-" + "0" * 20, SMALL)
    tokenizer_id = make_tokenizer(store, corpus_id, SMALL).manifest.id
    with pytest.raises(StoreError, match="is a tokenizer artifact, not a corpus"):
        make_tokenizer(store, tokenizer_id, SMALL)
    with pytest.raises(StoreError, match="not an artifact id"):
        make_tokenizer(store, "my-corpus", SMALL)


def test_corpus_with_empty_train_split_is_refused(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    corpus_id = "corpus-" + "a" * 20
    with store.staging(corpus_id) as staging:
        store.publish(
            staging,
            corpus_id,
            config={},
            stats={"documents": {"train": 0}},
            layout={"splits": {"train": [], "validation": []}},
        )
    with pytest.raises(InputError, match="empty train split"):
        make_tokenizer(store, corpus_id, SMALL)
    assert tokenizers_in(store) == []


def test_vocab_size_below_alphabet_and_specials_is_refused(corpus_store):
    store, corpus_id = corpus_store
    before = tokenizers_in(store)
    with pytest.raises(InputError, match="raise --vocab-size to at least"):
        make_tokenizer(store, corpus_id, TokenizerConfig(vocab_size=60, limit_alphabet=1000))
    assert tokenizers_in(store) == before


@pytest.mark.parametrize(
    "lines, problem",
    [
        (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the"], "missing special tokens \\[MASK\\]"),
        (
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "the"],
            ":8: duplicated token 'the'",
        ),
        (["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"], "\\[PAD\\] must be the first token"),
        (["[PAD]", "[UNK]", "", "[CLS]", "[SEP]", "[MASK]"], ":3: empty token"),
    ],
)
def test_bad_vocab_files_are_named_errors(corpus_store, tmp_path, lines, problem):
    store, corpus_id = corpus_store
    before = tokenizers_in(store)
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"vocab.txt.*{problem}"):
        make_tokenizer(store, corpus_id, TokenizerConfig(vocab=str(path)))
    assert tokenizers_in(store) == before


def test_missing_vocab_file_is_named(corpus_store, tmp_path):
    store, corpus_id = corpus_store
    with pytest.raises(InputError, match="nope.txt: no such vocabulary file"):
        make_tokenizer(store, corpus_id, TokenizerConfig(vocab=str(tmp_path / "nope.txt")))


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="vocab_size"):
        TokenizerConfig(vocab_size=3)
    with pytest.raises(ValueError, match="min_frequency"):
        TokenizerConfig(min_frequency=0)
    with pytest.raises(ValueError, match="max_chars_per_word"):
        TokenizerConfig(max_chars_per_word=0)


def test_an_imported_vocabulary_that_makes_mostly_unknown_tokens_is_refused(corpus_store, tmp_path):
    store, corpus_id = corpus_store
    before = tokenizers_in(store)
    path = tmp_path / "seven.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a"]) + "\n")
    with pytest.raises(
        InputError,
        match=r"\d+\.\d% of the tokens of corpus-\w+'s validation text "
        r"are \[UNK\] with the imported vocabulary .*seven\.txt "
        r"\(7 tokens\), more than 25%",
    ):
        make_tokenizer(store, corpus_id, TokenizerConfig(vocab=str(path)))
    assert tokenizers_in(store) == before


def test_a_vocabulary_missing_a_letter_is_published_with_a_warning(corpus_store, tmp_path):
    store, corpus_id = corpus_store
    trained = make_tokenizer(store, corpus_id, SMALL).manifest
    vocab = (store.local_path(trained.id) / "vocab.txt").read_text().splitlines()
    path = tmp_path / "no-v.txt"
    path.write_text("\n".join(t for t in vocab if "v" not in t) + "\n")  # "have", "very", ...
    manifest = make_tokenizer(store, corpus_id, TokenizerConfig(vocab=str(path))).manifest
    assert trained.stats["warnings"] == []
    (warning,) = manifest.stats["warnings"]
    assert f"{manifest.stats['unk_rate']:.1%} of the tokens" in warning
    assert 0.01 < manifest.stats["unk_rate"] < 0.25
