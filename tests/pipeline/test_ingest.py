"""The ingest stage without Prefect: output layout, determinism, dedup, split, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import STAGING_DIR, ArtifactStore
from bertflow.pipeline.ingest.corpus import CORPUS_SCHEMA, iter_documents
from bertflow.pipeline.ingest.stage import IngestConfig, ingest, plan_ingest

PROSE = (
    "The committee met on Tuesday. Mr. Jones presented the report, which ran to 3.5 pages. "
    "Everyone agreed it was thorough. The vote was held at noon."
)


def write_docs(folder: Path, n: int, prefix: str = "doc") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{prefix}{i:03d}.txt").write_text(f"Document number {i} begins here. {PROSE}\n")


def corpus_bytes(store: ArtifactStore, corpus_id: str) -> dict[str, bytes]:
    root = store.local_path(corpus_id)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_demo_small_corpus_has_schema_sorted_ids_and_both_splits(store):
    config = IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=1)
    published = ingest(store, config)
    m = published.manifest
    assert not published.cached and m.kind == "corpus"
    assert m.stats["documents"]["train"] > 0 and m.stats["documents"]["validation"] > 0
    assert m.stats["documents"]["train"] + m.stats["documents"]["validation"] == 24
    for split in ("train", "validation"):
        for entry in m.layout["splits"][split]:
            table = pq.read_table(store.local_path(m.id) / entry["path"])
            assert table.schema == CORPUS_SCHEMA
            ids = table.column("doc_id").to_pylist()
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert entry["documents"] == table.num_rows
    docs = list(iter_documents(store, m, "train"))
    assert len(docs) == m.stats["documents"]["train"]
    assert all(len(sentences) > 10 for _, sentences in docs)  # speeches are long


def test_output_is_byte_identical_for_one_and_two_workers(tmp_path):
    write_docs(tmp_path / "in", 60)
    stores = []
    for workers in (1, 2):
        store = ArtifactStore(str(tmp_path / f"store{workers}"))
        config = IngestConfig(
            sources=[str(tmp_path / "in")],
            validation_fraction=0.3,
            workers=workers,
            target_file_mb=0.002,  # several output files per split
        )
        stores.append((store, ingest(store, config).manifest))
    (s1, m1), (s2, m2) = stores
    assert m1.id == m2.id
    assert len(m1.layout["splits"]["train"]) > 1
    assert corpus_bytes(s1, m1.id) == corpus_bytes(s2, m2.id)
    assert m1.files == m2.files


def test_exact_duplicates_after_normalisation_are_removed_keeping_first_source(tmp_path, store):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text(PROSE)
    (folder / "b.txt").write_text(PROSE.replace(" ", "  ").replace(". ", ".\u00a0 ") + "\n\n")
    (folder / "c.txt").write_text("A different document entirely. It has two sentences.")
    m = ingest(
        store, IngestConfig(sources=[str(folder)], validation_fraction=0, workers=1)
    ).manifest
    assert m.stats["duplicates_removed"] == 1
    sources = [
        src
        for e in m.layout["splits"]["train"]
        for src in pq.read_table(store.local_path(m.id) / e["path"]).column("source").to_pylist()
    ]
    assert any(s.endswith("a.txt") for s in sources) and not any(
        s.endswith("b.txt") for s in sources
    )


def test_split_is_by_document_hash_and_stable_when_other_documents_change(tmp_path, store):
    write_docs(tmp_path / "in", 50)
    config = IngestConfig(
        sources=[str(tmp_path / "in")],
        validation_fraction=0.3,
        min_validation_documents=0,
        workers=1,
    )
    first = ingest(store, config)
    validation = {d for d, _ in iter_documents(store, first.manifest, "validation")}
    write_docs(tmp_path / "in", 5, prefix="extra")  # new documents must not move old ones
    second = ingest(store, config)
    assert second.manifest.id != first.manifest.id
    validation2 = {d for d, _ in iter_documents(store, second.manifest, "validation")}
    assert validation <= validation2
    assert 5 <= len(validation) <= 25


def test_validation_is_topped_up_to_its_minimum_with_the_next_hashes(tmp_path):
    """A 1% split of 60 documents holds about none; the minimum moves the train documents with
    the lowest hashes, the same ones for any worker count, with duplicates kept together."""
    write_docs(tmp_path / "in", 60)
    (tmp_path / "in" / "copy.txt").write_text((tmp_path / "in" / "doc007.txt").read_text())
    outputs = []
    for workers in (1, 2):
        store = ArtifactStore(str(tmp_path / f"store{workers}"))
        config = IngestConfig(
            sources=[str(tmp_path / "in")],
            validation_fraction=0.01,
            min_validation_documents=12,
            workers=workers,
            target_file_mb=0.002,
        )
        m = ingest(store, config).manifest
        outputs.append(corpus_bytes(store, m.id))
        ids = {
            split: [d for d, _ in iter_documents(store, m, split)]
            for split in ("train", "validation")
        }
    assert outputs[0] == outputs[1]
    assert m.stats["documents"] == {"train": 48, "validation": 12}
    assert m.stats["validation_topped_up"] >= 6 and m.stats["warnings"] == []
    assert max(ids["validation"]) < min(ids["train"])  # the next hashes, not any twelve
    assert m.stats["duplicates_removed"] == 1


def test_validation_minimum_takes_at_most_a_quarter_and_says_so(tmp_path, store):
    write_docs(tmp_path / "in", 20)
    m = ingest(
        store,
        IngestConfig(
            sources=[str(tmp_path / "in")],
            validation_fraction=0.01,
            min_validation_documents=10,
            workers=1,
        ),
    ).manifest
    assert m.stats["documents"] == {"train": 15, "validation": 5}
    assert "holds 5 documents, fewer than min_validation_documents 10" in m.stats["warnings"][0]
    none = ingest(
        store, IngestConfig(sources=[str(tmp_path / "in")], validation_fraction=0, workers=1)
    ).manifest
    assert none.stats["documents"]["validation"] == 0 and none.stats["warnings"] == []


def test_rerun_is_cached_and_config_change_makes_a_new_id(tmp_path, store):
    write_docs(tmp_path / "in", 5)
    config = IngestConfig(sources=[str(tmp_path / "in")], workers=1)
    first = ingest(store, config)
    again = ingest(store, config.model_copy(update={"workers": 2}))  # workers do not shape output
    assert again.cached and again.manifest == first.manifest
    other = ingest(store, config.model_copy(update={"min_doc_chars": 5}))
    assert not other.cached and other.manifest.id != first.manifest.id


def test_changed_input_file_changes_the_id(tmp_path):
    write_docs(tmp_path / "in", 3)
    config = IngestConfig(sources=[str(tmp_path / "in")], workers=1)
    before = plan_ingest(config).artifact_id
    (tmp_path / "in" / "doc001.txt").write_text("Changed text. Entirely new.")
    assert plan_ingest(config).artifact_id != before


def test_chinese_documents_are_split_at_cjk_terminators(tmp_path, store):
    (tmp_path / "zh.txt").write_text(
        "我们今天去公园。天气很好！你想一起去吗？“好的。”他说。\n", encoding="utf-8"
    )
    m = ingest(
        store,
        IngestConfig(
            sources=[str(tmp_path / "zh.txt")], validation_fraction=0, min_doc_chars=1, workers=1
        ),
    ).manifest
    ((_, sentences),) = iter_documents(store, m, "train")
    assert sentences[:3] == ["我们今天去公园。", "天气很好！", "你想一起去吗？"]


def test_malformed_records_under_the_limit_are_skipped_and_located(tmp_path, store):
    lines = [json.dumps({"text": f"Record {i} is fine. It has words."}) for i in range(200)]
    lines[7] = "{not json"
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    m = ingest(store, IngestConfig(sources=[str(path)], workers=1)).manifest
    assert m.stats["malformed_records"] == 1
    assert any("data.jsonl:8" in e for e in m.stats["malformed_examples"])
    assert m.stats["documents"]["train"] + m.stats["documents"]["validation"] == 199


def test_lone_surrogates_in_json_are_replaced_not_fatal(tmp_path, store):
    path = tmp_path / "escaped.jsonl"
    path.write_text('{"text": "Bad \\ud800 escape here. Then more."}\n')
    m = ingest(store, IngestConfig(sources=[str(path)], validation_fraction=0, workers=1)).manifest
    ((_, sentences),) = iter_documents(store, m, "train")
    assert sentences[0] == "Bad \ufffd escape here."


def assert_nothing_published(store: ArtifactStore) -> None:
    assert store.list() == []
    staging = Path(store.root) / STAGING_DIR
    assert not staging.exists() or not any(staging.iterdir())


def test_too_many_malformed_records_fail_naming_the_file_and_line(tmp_path, store):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "A good record. Fine."}\n{"txt": "wrong field"}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        ingest(store, IngestConfig(sources=[str(path)], workers=1))
    assert_nothing_published(store)


def test_corrupt_gzip_fails_by_default_and_is_reported_when_skipped(tmp_path, store):
    write_docs(tmp_path / "in", 3)
    data = gzip.compress(("Some text that is long enough. " * 500).encode())
    (tmp_path / "in" / "broken.txt.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="broken.txt.gz"):
        ingest(store, IngestConfig(sources=[str(tmp_path / "in")], workers=2))
    assert_nothing_published(store)
    m = ingest(
        store, IngestConfig(sources=[str(tmp_path / "in")], workers=2, on_bad_file="skip")
    ).manifest
    assert [s["file"].endswith("broken.txt.gz") for s in m.stats["files_skipped"]] == [True]


def test_an_executable_named_txt_fails_by_default_and_is_reported_when_skipped(tmp_path, store):
    write_docs(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(340))
    with pytest.raises(InputError, match=r"notes\.txt: not text: a NUL byte"):
        ingest(store, IngestConfig(sources=[str(tmp_path / "in")], workers=1))
    assert_nothing_published(store)
    m = ingest(
        store, IngestConfig(sources=[str(tmp_path / "in")], workers=1, on_bad_file="skip")
    ).manifest
    (skipped,) = m.stats["files_skipped"]
    assert skipped["file"].endswith("notes.txt") and "not text" in skipped["reason"]
    assert m.stats["documents_read"] == 3


def test_invalid_utf8_is_replaced_and_counted(tmp_path, store):
    (tmp_path / "latin1.txt").write_bytes(
        "Caf\xe9 society met today. It was lively.".encode("latin-1")
    )
    m = ingest(
        store,
        IngestConfig(sources=[str(tmp_path / "latin1.txt")], validation_fraction=0, workers=1),
    ).manifest
    assert m.stats["invalid_utf8_replaced"] == 1
    ((_, sentences),) = iter_documents(store, m, "train")
    assert sentences[0].startswith("Caf\ufffd society")


def test_nothing_left_after_filtering_fails_and_publishes_nothing(tmp_path, store):
    write_docs(tmp_path / "in", 3)
    with pytest.raises(InputError, match="no documents left"):
        ingest(
            store, IngestConfig(sources=[str(tmp_path / "in")], min_doc_chars=100_000, workers=1)
        )
    assert_nothing_published(store)


def test_missing_sources_and_unknown_formats_are_named(tmp_path, store):
    with pytest.raises(InputError, match="nope.txt: no such file"):
        ingest(store, IngestConfig(sources=[str(tmp_path / "nope.txt")], workers=1))
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(InputError, match="data.bin: cannot tell the format"):
        ingest(store, IngestConfig(sources=[str(tmp_path / "data.bin")], workers=1))
    write_docs(tmp_path / "mixed", 2)
    (tmp_path / "mixed" / "image.png").write_bytes(b"\x89PNG")
    m = ingest(store, IngestConfig(sources=[str(tmp_path / "mixed")], workers=1)).manifest
    assert m.stats["files_skipped"] == [
        {"file": str(tmp_path / "mixed" / "image.png"), "reason": "unknown format"}
    ]


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="validation_fraction"):
        IngestConfig(sources=["demo"], validation_fraction=1.5)
    with pytest.raises(ValueError, match="doc_separator"):
        IngestConfig(sources=["demo"], doc_split="separator")
    with pytest.raises(ValueError, match="sources"):
        IngestConfig(sources=[])


def test_progress_callbacks_see_all_bytes_and_documents(tmp_path, store):
    write_docs(tmp_path / "in", 4)
    states = []
    ingest(
        store, IngestConfig(sources=[str(tmp_path / "in")], workers=1), callbacks=[states.append]
    )
    final = states[-1]
    assert final.unit == "B" and final.done == final.total > 0 and final.fraction == 1.0
    assert final.files == 4 and final.documents == 4
    assert "100%" in final.describe() and "4 files" in final.describe()
