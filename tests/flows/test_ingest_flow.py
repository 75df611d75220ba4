"""The ingest flow and CLI against a real Prefect server and a real S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect_records import PrefectRecords

from bertflow.flows.cli import main
from bertflow.flows.ingest import ingest_flow
from bertflow.flows.records import asset_key
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.stage import IngestConfig

pytestmark = pytest.mark.usefixtures("prefect_server")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_flow_publishes_records_in_prefect_and_reruns_cached(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    config = IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=1)
    result = ingest_flow(config=config, store_url=store.url)
    assert not result.cached and result.kind == "corpus"
    manifest = store.require(result.id)
    assert manifest.producer.prefect_flow_run_id is not None
    records = PrefectRecords()
    assert records.keyed(result.id) and records.keyed(f"{result.id}-stats")
    events = records.materializations(asset_key(store, result.id))
    assert events and events[0].event == "prefect.asset.materialization.succeeded"
    related = {r.id for r in events[0].related}
    assert any(r.startswith("demo://sotu/") for r in related)  # raw inputs as asset deps

    again = ingest_flow(config=config, store_url=store.url)
    assert again.cached and again.id == result.id
    assert store.require(result.id) == manifest  # nothing was rebuilt or republished


def test_flow_to_s3_store_publishes_and_verifies(s3_env):
    store = ArtifactStore(s3_env)
    config = IngestConfig(sources=["demo-small"], validation_fraction=0.2, workers=2)
    result = ingest_flow(config=config, store_url=s3_env)
    assert result.uri.startswith("s3://") and not result.cached
    assert store.verify(result.id) == []
    assert ingest_flow(config=config, store_url=s3_env).cached


def test_s3_sources_are_read_and_fingerprinted_by_etag(s3_env, tmp_path):
    store = ArtifactStore(s3_env)
    prefix = s3_env.rsplit("/", 1)[0] + "/raw"
    store.fs.pipe_file(
        prefix.removeprefix("s3://") + "/a.jsonl",
        b'{"text": "Objects in a bucket. They are read by s3fs."}\n',
    )
    store.fs.pipe_file(
        prefix.removeprefix("s3://") + "/b.txt",
        b"A plain text object. It also counts as a document.",
    )
    result = ingest_flow(
        config=IngestConfig(sources=[prefix + "/"], validation_fraction=0, workers=1),
        store_url=str(tmp_path / "store"),
    )
    manifest = ArtifactStore(str(tmp_path / "store")).require(result.id)
    assert [i.fingerprint.split(":")[0] for i in manifest.inputs] == ["etag", "etag"]
    assert result.stats["documents"]["train"] == 2


def test_failed_flow_leaves_no_artifact(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    store = ArtifactStore(str(tmp_path / "store"))
    with pytest.raises(Exception, match="bad.jsonl"):
        ingest_flow(
            config=IngestConfig(sources=[str(tmp_path / "bad.jsonl")], workers=1),
            store_url=store.url,
        )
    assert store.list() == []


def test_cli_ingest_json_then_ls_show_verify_lineage(tmp_path, capsys):
    store = str(tmp_path / "store")
    code, out, _ = run_cli(
        capsys,
        "--store",
        store,
        "ingest",
        "demo-small",
        "--json",
        "--validation-fraction",
        "0.2",
        "--workers",
        "1",
    )
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert {"id", "kind", "uri", "cached", "stats"} <= result.keys() and result["cached"] is False
    corpus_id = result["id"]

    code, out, _ = run_cli(
        capsys, "ingest", "demo-small", "--store", store, "--json", "--validation-fraction", "0.2"
    )
    assert json.loads(out.strip().splitlines()[-1])["cached"] is True

    code, out, _ = run_cli(capsys, "artifacts", "ls", "--store", store)
    assert code == 0 and corpus_id in out
    code, out, _ = run_cli(capsys, "artifacts", "show", corpus_id, "--store", store, "--json")
    shown = json.loads(out)
    assert shown["id"] == corpus_id and Path(shown["local_path"]).is_dir()
    assert run_cli(capsys, "artifacts", "verify", corpus_id, "--store", store)[0] == 0

    code, out, _ = run_cli(capsys, "lineage", corpus_id, "--store", store)
    assert corpus_id in out and "raw inputs (24 files)" in out
    code, out, _ = run_cli(capsys, "lineage", corpus_id, "--store", store, "--json")
    assert len(json.loads(out)["inputs"]) == 24

    victim = Path(shown["local_path"]) / shown["files"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    code, out, _ = run_cli(capsys, "artifacts", "verify", corpus_id, "--store", store)
    assert code == 1 and shown["files"][0]["path"] in out


def test_cli_rejects_bad_option_naming_it_and_reports_input_errors(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "--store", str(tmp_path), "ingest", "demo", "--validation-fraction", "2"
    )
    assert code == 2 and "--validation-fraction" in err
    code, _, err = run_cli(
        capsys, "--store", str(tmp_path), "ingest", str(tmp_path / "missing.txt")
    )
    assert code == 1 and "missing.txt: no such file" in err
    code, _, err = run_cli(
        capsys, "--store", str(tmp_path), "artifacts", "show", "corpus-" + "0" * 20
    )
    assert code == 1 and "no artifact" in err


def test_a_write_that_fails_ends_in_one_error_line_and_publishes_nothing(tmp_path: Path) -> None:
    """A file-size limit makes writes fail as a full disk does (with EFBIG, not ENOSPC)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    import os

    store, temp = tmp_path / "store", tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bertflow.flows.cli",
            "--store",
            str(store),
            "ingest",
            "demo-small",
            "--workers",
            "1",
        ],
        env={**os.environ, "TMPDIR": str(temp)},
        preexec_fn=limit_file_size,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    said = "bertflow ingest: error: File too large: "
    assert last.startswith(said) and last.endswith("; nothing was published"), last
    written = last.removeprefix(said).removesuffix("; nothing was published")
    assert Path(written).parent in (temp, store / ".staging")  # the spill or staging folder
    assert ArtifactStore(str(store)).list() == []
    assert list((store / ".staging").iterdir()) == [] and list(temp.iterdir()) == []
