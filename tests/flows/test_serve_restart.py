"""`bertflow serve` when its Prefect server restarts: it exits with SERVER_LOST and says so
(Prefect's runner could no longer cancel runs), and serving again, as a supervisor does, works in
full: the deployments are unpaused, the schedule makes runs, a run created after the restart
completes, the automation starts the pipeline on the corpus it published, and that run, in
progress, cancels. The test has a server of its own: the session's is shared, so not restarted."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling
from prefect_records import PrefectRecords, poll, wait_for_run
from prefect_server import PrefectServer

from bertflow.flows import serving
from bertflow.flows.deployments import deployments
from bertflow.flows.ingest import ingest_flow
from bertflow.flows.pipeline_config import PipelineConfig, to_yaml
from bertflow.flows.serving import SERVER_LOST, ServerWatch, connection_lost
from bertflow.pipeline.core.store import STORE_ENV, ArtifactStore

pytestmark = pytest.mark.slow  # a served deployment end to end

# Long enough that the websocket of the runner's cancellation observer gives up (~10 s) and that
# `bertflow serve` counts the server as lost; a shorter blip Prefect rides out by itself.
DOWN_S = ServerWatch().lost_after_s + 5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    home = tmp_path / "server"
    home.mkdir()
    server = PrefectServer(home)
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        server.stop()


class Serving:
    """`bertflow serve --config PATH --schedule-active --automation` processes against one
    server, each in its own process group (as a user or a supervisor starts it), stopping at the
    end whatever happened. Stage runs publish into the config's store."""

    def __init__(self, api_url: str, config: Path, store_url: str, folder: Path):
        self.folder, self.config = folder, config
        self.env = {
            **os.environ,
            "PREFECT_API_URL": api_url,
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            STORE_ENV: store_url,
            "BERTFLOW_RUNS": str(folder / "runs"),
        }
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = self.folder / f"serve-{len(self.processes)}.log"
        argv = [
            sys.executable,
            "-m",
            "bertflow.flows.cli",
            "serve",
            "--config",
            str(self.config),
            "--schedule-active",
            "--automation",
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append((process, log))
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return next(log for p, log in self.processes if p is process).read_text()

    def stop_all(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):  # what it left in its group too
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def deployment_names(config: PipelineConfig) -> dict[str, str]:
    """The names `bertflow serve` gives its deployments: `pipeline`, and one per stage flow."""
    pipeline, *stages = deployments(config)
    names = {"pipeline": f"{pipeline.flow_name}/{pipeline.name}"}
    return names | {d.flow_name: f"{d.flow_name}/{d.name}" for d in stages}


def served(names: dict[str, str]) -> dict[str, Any]:
    """Those deployments as the server has them, or {} until all of them are there."""
    with get_client(sync_client=True) as client:
        try:
            return {key: client.read_deployment_by_name(name) for key, name in names.items()}
        except Exception:
            return {}


def long_pipeline(pipeline_config: Any, tmp_path: Path) -> PipelineConfig:
    """The tiny pipeline, with training long enough to be cancelled while it runs."""
    config = pipeline_config(ArtifactStore(str(tmp_path / "store")).url, tmp_path)
    fields = config.model_dump(mode="json")
    fields["phases"][0]["pretrain"].update(
        max_steps=100_000, val_every=100_000, checkpoint_every=100_000
    )
    return PipelineConfig.model_validate(fields)


def test_serve_exits_when_its_server_restarts_and_serving_again_works_in_full(
    server, pipeline_config, tmp_path
):
    config = long_pipeline(pipeline_config, tmp_path)
    path = tmp_path / "served.yaml"
    path.write_text(to_yaml(config))
    names = deployment_names(config)
    serving = Serving(server.api_url, path, config.store, tmp_path)
    try:
        first = serving.start()
        assert poll(lambda: served(names), 180), f"nothing served:\n{serving.log(first)[-3000:]}"

        server.stop()
        time.sleep(DOWN_S)
        server.start()
        try:
            code = first.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve kept running:\n{serving.log(first)[-3000:]}")
        said = serving.log(first)
        assert code == SERVER_LOST, said[-3000:]
        [exiting] = [line for line in said.splitlines() if "exiting so a supervisor" in line]
        assert exiting.startswith(f"bertflow serve: lost the Prefect server at {server.api_url} (")

        again = serving.start()  # the supervisor's restart

        def unpaused() -> dict[str, Any]:
            found = served(names)
            return found if found and not any(d.paused for d in found.values()) else {}

        found = poll(unpaused, 180)  # the first serve paused them as it stopped
        assert found, f"not served again:\n{serving.log(again)[-3000:]}"
        records = PrefectRecords()

        def scheduled() -> list[Any]:
            return [r for r in records.runs_of(found["pipeline"].id) if r.state.is_scheduled()]

        assert poll(scheduled, 60), "the schedule makes no runs"
        with get_client(sync_client=True) as client:
            ingest = client.create_flow_run_from_deployment(found[ingest_flow.name].id)
        done = wait_for_run(ingest.id, 180)
        assert done is not None and done.state.is_completed(), serving.log(again)[-3000:]

        def triggered() -> list[Any]:  # by the automation, on the corpus that run published
            runs = records.runs_of(found["pipeline"].id)
            return [r for r in runs if r.parameters["config"].get("corpus_id")]

        [pipeline] = poll(triggered, 60) or [None]
        assert pipeline is not None, f"the automation ran nothing:\n{serving.log(again)[-3000:]}"
        running = poll(lambda: records.run(pipeline.id).state.is_running(), 180, every_s=1.0)
        assert running, f"{records.run(pipeline.id).state}:\n{serving.log(again)[-3000:]}"
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(pipeline.id, Cancelling())  # the UI's Cancel
        done = wait_for_run(pipeline.id, 120)
        assert done is not None, f"not cancelled:\n{serving.log(again)[-3000:]}"
        assert done.state.is_cancelled(), f"{done.state}:\n{serving.log(again)[-3000:]}"

        assert again.poll() is None  # still serving, until Ctrl-C
        os.killpg(again.pid, signal.SIGINT)
        assert again.wait(timeout=60) == 0
    finally:
        serving.stop_all()


def test_a_runner_that_fails_on_a_lost_connection_counts_as_the_server_lost():
    """Under load the runner can give up before the watch does; its shutdown then fails to pause
    the deployments with the refused connection in the exception's context."""
    try:
        try:
            raise httpx.ConnectError("All connection attempts failed")
        except httpx.ConnectError:
            raise RuntimeError("pausing the deployments failed")  # noqa: B904 (a context, as Prefect leaves)
    except RuntimeError as e:
        assert "ConnectError" in (connection_lost(BaseExceptionGroup("serve", [e])) or "")
    assert connection_lost(ValueError("a bad deployment")) is None


def test_a_runner_that_stops_on_its_own_while_the_watch_waits_is_not_interrupted_later(monkeypatch):
    """Under load the runner can stop by itself (on a refused connection) while the watch waits
    for the lost server to come back: serve exits SERVER_LOST, and the watch's Ctrl-C comes
    neither during that exit nor after it (it once landed in the exit message)."""
    with socket.socket() as s:  # a port nothing listens on: the server is gone
        s.bind(("127.0.0.1", 0))
        api_url = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    watch = ServerWatch(check_every_s=0.05, timeout_s=0.2, lost_after_s=0.2, return_within_s=5.0)
    monkeypatch.setattr(serving, "prefect_serve", lambda *_: time.sleep(1.0))  # stops by itself
    try:
        code = serving.serve([], api_url, watch)
        time.sleep(1.0)  # for an interrupt the watch would still send
    except KeyboardInterrupt:
        pytest.fail("the watch interrupted the process after serving had stopped")
    assert code == SERVER_LOST
