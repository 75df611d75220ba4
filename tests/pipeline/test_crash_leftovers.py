"""What a crash leaves behind: workers die with their parent; staging and spill folders of dead
runs are cleared by the next run of the artifact and by `bertflow artifacts gc`, never those of a
live run; artifact folders follow the umask."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from bertflow.flows.cli import main
from bertflow.pipeline.core.scratch import scratch_folder, sweep
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.stage import IngestConfig, ingest

HOLD = textwrap.dedent(
    """
    import sys, time
    from bertflow.pipeline.core.scratch import scratch_folder
    with scratch_folder("bertflow-held-", sys.argv[1]) as folder:
        (folder / "part").write_bytes(b"x" * 1000)
        print(folder, flush=True)
        time.sleep(600)
    """
)

INGEST = textwrap.dedent(
    """
    import sys
    from bertflow.pipeline.ingest.stage import IngestConfig, ingest
    from bertflow.pipeline.core.store import ArtifactStore
    ingest(ArtifactStore(sys.argv[1]), IngestConfig(sources=["demo"], workers=2))
    """
)


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$TMPDIR of this test and of the processes it starts."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def holder(parent: Path) -> tuple[subprocess.Popen, Path]:
    """A process holding a scratch folder in `parent`, and the folder."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(parent)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def killed(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_live_runs_folder_is_kept_and_a_dead_runs_folder_swept(tmp_path: Path) -> None:
    live, live_folder = holder(tmp_path)
    dead, dead_folder = holder(tmp_path)
    killed(dead)
    try:
        listed = sweep(tmp_path, "bertflow-held-*", dry_run=True)
        assert [f.path for f in listed] == [dead_folder] and listed[0].bytes == 1000
        assert dead_folder.exists()
        assert [f.path for f in sweep(tmp_path, "bertflow-held-*")] == [dead_folder]
        assert not dead_folder.exists()
        assert not dead_folder.with_name(dead_folder.name + ".held").exists()
        assert live_folder.exists() and sweep(tmp_path, "bertflow-held-*") == []
    finally:
        killed(live)
    assert [f.path for f in sweep(tmp_path, "bertflow-held-*")] == [live_folder]


def test_a_finished_scratch_folder_leaves_nothing(tmp_path: Path) -> None:
    with scratch_folder("bertflow-x-", tmp_path) as folder:
        (folder / "file").write_text("data")
        assert len(list(tmp_path.iterdir())) == 2  # the folder and its lock
    assert list(tmp_path.iterdir()) == []


def test_ingest_killed_takes_its_workers_along_and_its_rerun_clears_the_leftovers(
    tmp_path: Path, temp: Path
) -> None:
    store_dir = tmp_path / "store"
    process = subprocess.Popen([sys.executable, "-c", INGEST, str(store_dir)])
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while len(workers) < 2 and time.monotonic() < deadline:  # the pool's workers (and tracker)
        workers = [p for p in parent.children(recursive=True) if "spawn" in " ".join(p.cmdline())]
        time.sleep(0.1)
    assert len(workers) >= 2, "the ingest never started its workers"
    everyone = parent.children(recursive=True)
    killed(process)
    gone, alive = psutil.wait_procs(everyone, timeout=10)
    assert alive == [], f"still alive 10 s after their parent was killed: {alive}"

    staging = list((store_dir / ".staging").glob("corpus-*"))
    spills = list(temp.glob("bertflow-ingest-spill-*"))
    assert staging and spills, "the killed run left nothing to clear"
    published = ingest(ArtifactStore(str(store_dir)), IngestConfig(sources=["demo"], workers=2))
    assert not published.cached
    assert [p for p in (store_dir / ".staging").iterdir()] == []
    assert list(temp.iterdir()) == []


def test_gc_lists_then_removes_dead_runs_leftovers_and_keeps_live_ones(
    tmp_path: Path, temp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store" / ".staging").mkdir(parents=True)
    dead_staging, dead_staging_folder = holder(tmp_path / "store" / ".staging")
    dead_spill, dead_spill_folder = holder(temp)
    live, live_folder = holder(temp)
    killed(dead_staging)
    killed(dead_spill)
    try:
        assert main(["artifacts", "gc", "--dry-run", "--store", store.url]) == 0
        out = capsys.readouterr().out
        assert f"would remove {dead_staging_folder} " in out
        assert f"would remove {dead_spill_folder} " in out
        assert str(live_folder) not in out and "would remove 2 folder(s)" in out
        assert dead_staging_folder.exists() and dead_spill_folder.exists()

        assert main(["artifacts", "gc", "--store", store.url]) == 0
        assert "removed 2 folder(s)" in capsys.readouterr().out
        assert not dead_staging_folder.exists() and not dead_spill_folder.exists()
        assert live_folder.exists()
    finally:
        killed(live)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o002, 0o775)])
def test_artifact_folders_follow_the_umask(store: ArtifactStore, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        with store.staging("corpus-0123456789abcdef0123") as staging:
            (staging / "file").write_text("data")
            published = store.publish(staging, "corpus-0123456789abcdef0123", config={})
    finally:
        os.umask(previous)
    folder = store.local_path(published.manifest.id)
    assert stat.S_IMODE(folder.stat().st_mode) == mode
    assert stat.S_IMODE((folder / "file").stat().st_mode) == mode & 0o666
