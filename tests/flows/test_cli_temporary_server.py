"""Without PREFECT_API_URL a stage runs on a temporary Prefect server: the command says so, gives
it longer than Prefect's 20 s, and a server that still misses its limit is one clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bertflow.flows.cli import KEEP_A_SERVER, STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT_S

BERTFLOW = [sys.executable, "-m", "bertflow.flows.cli"]


def no_server_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This environment without a Prefect server, with its own Prefect home."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", STARTUP_TIMEOUT_ENV)}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect"), **settings}


def test_a_server_that_misses_its_limit_is_a_clear_error(tmp_path):
    store = tmp_path / "store"
    done = subprocess.run(
        [*BERTFLOW, "--store", str(store), "ingest", "demo-small", "--workers", "1"],
        env=no_server_env(tmp_path, **{STARTUP_TIMEOUT_ENV: "0"}),  # Prefect waits 0 s
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    starting = [line for line in lines if "starting a temporary Prefect server" in line]
    assert len(starting) == 1 and starting[0].startswith("bertflow ingest: ")
    assert "up to 0 s" in starting[0] and KEEP_A_SERVER in starting[0]
    assert KEEP_A_SERVER.startswith("export PREFECT_API_URL=http://127.0.0.1:4200/api; ")
    errors = [line for line in lines if line.startswith("bertflow ingest: error: ")]
    assert len(errors) == 1, done.stderr
    assert STARTUP_TIMEOUT_ENV in errors[0] and "PREFECT_API_URL" in errors[0]
    assert "Traceback" not in done.stderr
    assert not any(store.glob("corpus/*"))


def test_the_default_limit_is_raised(tmp_path):
    """The announcement comes before Prefect loads; the process is stopped right after it."""
    process = subprocess.Popen(
        [*BERTFLOW, "--store", str(tmp_path / "store"), "ingest", "demo-small"],
        env=no_server_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        first = process.stderr.readline()
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # with any server it had started
        process.wait()
        process.stderr.close()
    assert f"up to {STARTUP_TIMEOUT_S} s" in first and STARTUP_TIMEOUT_S > 20


def test_a_limit_prefect_cannot_read_is_named(tmp_path):
    done = subprocess.run(
        [*BERTFLOW, "--store", str(tmp_path / "store"), "ingest", "demo-small"],
        env=no_server_env(tmp_path, **{STARTUP_TIMEOUT_ENV: "0.5"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"bertflow ingest: error: {STARTUP_TIMEOUT_ENV}='0.5': ")


def test_a_server_that_does_not_answer_is_a_clear_error(tmp_path):
    """PREFECT_API_URL set, nothing listening there (a server down or restarting)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    store = tmp_path / "store"
    done = subprocess.run(
        [*BERTFLOW, "--store", str(store), "ingest", "demo-small", "--workers", "1"],
        env={**no_server_env(tmp_path), "PREFECT_API_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bertflow ingest: error: the Prefect server at {url} did not answer")
    assert "run the command again once the server is up" in last
    assert not any(store.glob("corpus/*"))
