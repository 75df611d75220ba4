"""The artifact store, on a local folder and on S3 (moto's server on loopback), behaves the same."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import fsspec
import pytest

from bertflow.pipeline.core.manifest import (
    FORMAT_VERSIONS,
    MANIFEST_NAME,
    InputFingerprint,
    artifact_id,
    bertflow_version,
)
from bertflow.pipeline.core.store import (
    STAGING_DIR,
    ArtifactNotFound,
    ArtifactStore,
    Published,
    StoreError,
)

CONFIG = {"source": "sotu", "min_chars": 20}
FILES = {
    "part-0.txt": b"first shard\n",
    "shards/train/part-1.txt": b"a nested shard\n" * 50,
    "shards/valid/part-2.txt": b"",
}
NESTED = "shards/train/part-1.txt"


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest) -> ArtifactStore:
    """The same tests, run once against a local folder and once against the S3 server."""
    if request.param == "local":
        return request.getfixturevalue("store")
    return ArtifactStore(request.getfixturevalue("s3_env"))


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def publish(
    store: ArtifactStore,
    files: dict[str, bytes] = FILES,
    config: dict[str, Any] = CONFIG,
    **fields: Any,
) -> Published:
    """Stage `files` and publish them as the corpus artifact that `config` names."""
    aid = artifact_id("corpus", config, fields.get("upstream"), fields.get("inputs"))
    with store.staging(aid) as staging:
        write_files(staging, files)
        return store.publish(staging, aid, config=config, **fields)


def publish_concurrently(store: ArtifactStore, aid: str, writers: int) -> list[Published]:
    """`writers` threads stage identical files, then all call publish at the same moment."""
    barrier = threading.Barrier(writers, timeout=10)

    def one(_: int) -> Published:
        with store.staging(aid) as staging:
            write_files(staging, FILES)
            barrier.wait()
            return store.publish(staging, aid, config=CONFIG)

    with ThreadPoolExecutor(writers) as pool:
        return list(pool.map(one, range(writers)))


def write_crash_leftover(store: ArtifactStore, aid: str) -> None:
    """What a run that died mid-publish leaves: files in the artifact folder, no manifest."""
    store.fs.makedirs(store.uri(aid), exist_ok=True)
    store.fs.pipe_file(store.uri(aid, "x"), b"half-written")


def staging_leftovers(store: ArtifactStore) -> list[Path]:
    return sorted((Path(store.root) / STAGING_DIR).iterdir())


# -- publishing and reading back ----------------------------------------------------------------


def test_published_artifact_is_returned_by_get_and_require(any_store: ArtifactStore) -> None:
    published = publish(any_store)
    assert not published.cached
    assert any_store.get(published.manifest.id) == published.manifest
    assert any_store.require(published.manifest.id, kind="corpus") == published.manifest


def test_manifest_lists_every_staged_file_with_its_size_and_sha256(
    any_store: ArtifactStore,
) -> None:
    manifest = publish(any_store).manifest
    listed = {f.path: (f.size, f.sha256) for f in manifest.files}
    assert listed == {rel: (len(d), hashlib.sha256(d).hexdigest()) for rel, d in FILES.items()}


def test_manifest_records_what_made_the_artifact(any_store: ArtifactStore) -> None:
    upstream = {"raw": "corpus-" + "0" * 20}
    inputs = [InputFingerprint(uri="s3://raw/sotu.txt", size=3, fingerprint="etag:abc")]
    stats = {"documents": 3, "chars": 1234}
    layout = {"splits": {"train": [NESTED], "valid": ["shards/valid/part-2.txt"]}}
    manifest = publish(
        any_store,
        upstream=upstream,
        inputs=inputs,
        stats=stats,
        layout=layout,
        flow_run_id="run-1",
    ).manifest
    assert manifest.id == artifact_id("corpus", CONFIG, upstream, inputs)
    assert (manifest.kind, manifest.format_version) == ("corpus", FORMAT_VERSIONS["corpus"])
    assert (manifest.config, manifest.upstream, manifest.inputs) == (CONFIG, upstream, inputs)
    assert (manifest.stats, manifest.layout) == (stats, layout)
    assert manifest.producer.bertflow_version == bertflow_version() != ""
    assert manifest.producer.prefect_flow_run_id == "run-1"
    assert datetime.fromisoformat(manifest.created).tzinfo is not None


def test_open_reads_a_published_file_back(any_store: ArtifactStore) -> None:
    aid = publish(any_store).manifest.id
    for rel, data in FILES.items():
        with any_store.open(aid, rel) as f:
            assert f.read() == data


def test_local_uri_is_the_artifact_folder_and_asset_key_its_file_url(
    store: ArtifactStore, tmp_path: Path
) -> None:
    aid = publish(store).manifest.id
    folder = (tmp_path / "store" / "corpus" / aid).resolve()
    assert store.uri(aid) == str(folder)
    assert store.local_path(aid) == folder
    assert store.asset_key(aid) == folder.as_uri()
    assert store.asset_key(aid).startswith("file:///")
    with fsspec.open(store.uri(aid, NESTED), "rb") as f:
        assert f.read() == FILES[NESTED]


def test_s3_uri_and_asset_key_are_s3_urls_of_the_artifact(s3_env: str) -> None:
    s3_store = ArtifactStore(s3_env)
    aid = publish(s3_store).manifest.id
    assert s3_store.uri(aid) == f"{s3_env}/corpus/{aid}"
    assert s3_store.asset_key(aid) == f"{s3_env}/corpus/{aid}"
    assert s3_store.local_path(aid) is None
    with fsspec.open(s3_store.uri(aid, NESTED), "rb") as f:
        assert f.read() == FILES[NESTED]


def test_local_publish_moves_the_staging_folder_into_place(store: ArtifactStore) -> None:
    aid = artifact_id("corpus", CONFIG)
    with store.staging(aid) as staging:
        write_files(staging, FILES)
        store.publish(staging, aid, config=CONFIG)
        assert not staging.exists()
    assert staging_leftovers(store) == []


def test_publishing_an_existing_id_is_cached_and_keeps_the_first_manifest(
    any_store: ArtifactStore,
) -> None:
    first = publish(any_store, stats={"run": 1}).manifest
    again = publish(any_store, files={"part-0.txt": b"other bytes"}, stats={"run": 2})
    assert again.cached
    assert again.manifest == first
    assert any_store.get(first.id) == first
    assert any_store.verify(first.id) == []


# -- failures and crashes -----------------------------------------------------------------------


def test_a_stage_that_raises_leaves_no_artifact_and_no_staging_folder(
    any_store: ArtifactStore,
) -> None:
    aid = artifact_id("corpus", CONFIG)
    with pytest.raises(RuntimeError, match="stage failed"), any_store.staging(aid) as staging:
        write_files(staging, FILES)
        raise RuntimeError("stage failed")
    assert not staging.exists()
    assert any_store.get(aid) is None
    assert not any_store.fs.exists(any_store.uri(aid))
    if any_store.is_local:
        assert staging_leftovers(any_store) == []


def test_a_folder_without_manifest_is_absent_and_a_later_publish_completes_it(
    any_store: ArtifactStore,
) -> None:
    aid = artifact_id("corpus", CONFIG)
    write_crash_leftover(any_store, aid)
    assert any_store.get(aid) is None
    assert any_store.list() == []
    with pytest.raises(ArtifactNotFound):
        any_store.require(aid)

    published = publish(any_store)
    assert not published.cached
    assert any_store.get(aid) == published.manifest
    assert [m.id for m in any_store.list()] == [aid]
    assert any_store.verify(aid) == []


def test_concurrent_publishes_of_one_id_all_succeed_and_one_wins(store: ArtifactStore) -> None:
    for round_ in range(5):
        aid = artifact_id("corpus", CONFIG | {"round": round_})
        results = publish_concurrently(store, aid, writers=2)
        assert [r.cached for r in results].count(False) == 1
        assert all(r.manifest == store.get(aid) for r in results)
        assert store.verify(aid) == []
    assert staging_leftovers(store) == []


def test_concurrent_publishes_over_a_crashed_folder_all_succeed(store: ArtifactStore) -> None:
    for round_ in range(5):
        aid = artifact_id("corpus", CONFIG | {"round": round_})
        write_crash_leftover(store, aid)
        publish_concurrently(store, aid, writers=4)
        assert store.verify(aid) == []


# -- listing and verifying ----------------------------------------------------------------------


def test_list_of_an_empty_store_is_empty(any_store: ArtifactStore) -> None:
    assert any_store.list() == []
    assert any_store.list("corpus") == []


def test_list_returns_every_complete_artifact_of_a_kind(any_store: ArtifactStore) -> None:
    ids = {publish(any_store, config=CONFIG | {"n": n}).manifest.id for n in range(3)}
    assert {m.id for m in any_store.list()} == ids
    assert {m.id for m in any_store.list("corpus")} == ids
    assert len(any_store.list()) == 3


def test_verify_finds_nothing_wrong_with_an_intact_artifact(any_store: ArtifactStore) -> None:
    assert any_store.verify(publish(any_store).manifest.id) == []


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("changed", "content changed"),
        ("truncated", f"size 10 bytes, manifest says {len(FILES[NESTED])}"),
        ("missing", "missing"),
    ],
)
def test_verify_names_a_damaged_file(any_store: ArtifactStore, damage: str, says: str) -> None:
    aid = publish(any_store).manifest.id
    target = any_store.uri(aid, NESTED)
    if damage == "changed":
        any_store.fs.pipe_file(target, FILES[NESTED].upper())
    elif damage == "truncated":
        any_store.fs.pipe_file(target, FILES[NESTED][:10])
    else:
        any_store.fs.rm_file(target)
    problems = any_store.verify(aid)
    assert len(problems) == 1 and problems[0].startswith(f"{NESTED}: {says}")


# -- errors -------------------------------------------------------------------------------------


def test_require_an_unknown_id_names_the_id_and_the_store(any_store: ArtifactStore) -> None:
    aid = artifact_id("corpus", {"never": "published"})
    with pytest.raises(ArtifactNotFound) as excinfo:
        any_store.require(aid)
    assert aid in str(excinfo.value)
    assert any_store.url in str(excinfo.value)


def test_require_an_artifact_of_another_kind_says_both_kinds(any_store: ArtifactStore) -> None:
    aid = publish(any_store).manifest.id
    with pytest.raises(StoreError, match=f"{aid} is a corpus artifact, not a tokenizer artifact"):
        any_store.require(aid, kind="tokenizer")


def test_require_a_malformed_id_is_a_store_error(any_store: ArtifactStore) -> None:
    with pytest.raises(StoreError, match="'corpus-123' is not an artifact id") as excinfo:
        any_store.require("corpus-123")
    assert not isinstance(excinfo.value, ArtifactNotFound)


@pytest.mark.parametrize(
    "garbage", [b'{"id": "trunc', b'{"id": "corpus-x"}'], ids=["json", "shape"]
)
def test_a_corrupt_manifest_is_a_store_error_naming_its_path(
    any_store: ArtifactStore, garbage: bytes
) -> None:
    aid = publish(any_store).manifest.id
    manifest_path = any_store.uri(aid, MANIFEST_NAME)
    any_store.fs.pipe_file(manifest_path, garbage)
    for read in (any_store.get, any_store.require):
        with pytest.raises(StoreError, match="not a valid bertflow manifest") as excinfo:
            read(aid)
        assert manifest_path in str(excinfo.value)
    manifests, problems = any_store.scan()
    assert manifests == [] and len(problems) == 1
    assert f"{manifest_path}: not a valid bertflow manifest" in problems[0]


def test_one_broken_manifest_is_reported_and_the_others_still_listed(
    any_store: ArtifactStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertflow.flows.cli import main

    good = publish(any_store).manifest.id
    bad = publish(any_store, config={"other": 1}).manifest.id
    any_store.fs.pipe_file(any_store.uri(bad, MANIFEST_NAME), b"{not json")
    assert [m.id for m in any_store.list()] == [good]
    assert main(["artifacts", "ls", "--store", any_store.url]) == 0
    out, err = capsys.readouterr()
    assert good in out and bad not in out
    assert "bertflow artifacts ls: skipped a broken entry: " in err
    assert any_store.uri(bad, MANIFEST_NAME) in err


def test_a_folder_copied_under_another_id_is_reported_not_listed_twice(store: ArtifactStore):
    import shutil

    original = publish(store).manifest.id
    copy = artifact_id("corpus", {"copied": True})
    shutil.copytree(store.local_path(original), store.local_path(copy))
    manifests, problems = store.scan()
    assert [m.id for m in manifests] == [original]
    assert len(problems) == 1 and f"the manifest is of {original}, not of {copy}" in problems[0]
    with pytest.raises(StoreError, match=f"the manifest is of {original}, not of {copy}"):
        store.require(copy)


def test_lineage_names_an_upstream_id_it_cannot_read_and_goes_on(store: ArtifactStore) -> None:
    from bertflow.pipeline.core.lineage import lineage, render

    aid = publish(
        store, upstream={"tokenizer": "../../etc", "corpus": "corpus-" + "0" * 20}
    ).manifest.id
    tree = lineage(store, aid)
    broken = {up["role"]: up for up in tree["upstream"]}
    assert broken["tokenizer"]["missing"] and "not an artifact id" in broken["tokenizer"]["problem"]
    assert broken["corpus"]["missing"] and "problem" not in broken["corpus"]
    text = render(tree)
    assert "tokenizer: ../../etc  (cannot be read: " in text
    assert "(missing from the store)" in text


# -- object storage seen from more than one process ---------------------------------------------


def separate_process_stores(url: str) -> tuple[ArtifactStore, ArtifactStore]:
    """Two stores on one URL that share no s3fs instance or cache, as two processes would."""
    options = {"skip_instance_cache": True}
    return ArtifactStore(url, options), ArtifactStore(url, options)


def test_s3_list_sees_artifacts_another_process_published(s3_env: str) -> None:
    reader, writer = separate_process_stores(s3_env)
    first = publish(writer, config=CONFIG | {"n": 1}).manifest.id
    assert [m.id for m in reader.list()] == [first]
    second = publish(writer, config=CONFIG | {"n": 2}).manifest.id
    assert {m.id for m in reader.list()} == {first, second}


def test_s3_verify_reports_a_file_another_process_removed(s3_env: str) -> None:
    reader, writer = separate_process_stores(s3_env)
    aid = publish(writer).manifest.id
    reader.list()  # caches the listing of the artifact's folder, which holds part-0.txt
    writer.fs.rm_file(writer.uri(aid, "part-0.txt"))
    assert reader.verify(aid) == ["part-0.txt: missing"]
