"""The pretrain flow against a real Prefect server: the model artifact and its
records, configs refused before any work, and the training process group dying with the flow."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from prefect.settings import get_current_settings
from prefect_records import PrefectRecords, poll

from bertflow.flows.pretrain import pretrain_flow
from bertflow.model.training.plan import plan_pretrain
from bertflow.model.training.train import LightningChatter
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")

MODEL_FILES = {
    "checkpoint/last.ckpt",
    "hf/config.json",
    "hf/model.safetensors",
    "hf/vocab.txt",
    "hf/tokenizer.json",
    "hf/tokenizer_config.json",
    "logs/metrics.csv",
    "loss.png",
    "metrics.json",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The flow in a process of its own, as a Prefect worker would run it: argv is
# shards id, store url, run dir, TrainConfig JSON.
FLOW_SCRIPT = """
import sys
from bertflow.flows.pretrain import pretrain_flow
from bertflow.model.training.config import TrainConfig

shards_id, store_url, run_dir, config_json = sys.argv[1:]
config = TrainConfig.model_validate_json(config_json)
pretrain_flow(shards_id, config=config, store_url=store_url, run_dir=run_dir)
"""


RECORDS = PrefectRecords()


# -- a model artifact, then the cache ---------------------------------------------------------


def test_flow_publishes_the_model_with_records_and_progress_then_reruns_cached(
    tiny_shards, training_config, tmp_path
):
    store = ArtifactStore(tiny_shards.store_url)
    config = training_config(seed=7)  # an id no other test trains
    state = pretrain_flow(
        tiny_shards.shards_id,
        config=config,
        store_url=store.url,
        run_dir=str(tmp_path / "run"),
        return_state=True,
    )
    result = state.result()
    flow_run_id = state.state_details.flow_run_id
    assert result.kind == "model" and not result.cached
    assert not (tmp_path / "run").exists()  # published: the artifact holds logs and checkpoint
    assert result.upstream == {"shards": tiny_shards.shards_id}

    manifest = store.require(result.id)
    assert {f.path for f in manifest.files} >= MODEL_FILES
    assert (store.local_path(result.id) / "loss.png").read_bytes()[:8] == PNG_SIGNATURE
    assert {"mlm_loss", "mlm_acc", "nsp_acc"} <= result.stats["validation"].keys()
    assert result.stats["tokens_per_s"] > 0

    report = RECORDS.keyed(result.id).data
    assert report is not None and tiny_shards.shards_id in report
    assert RECORDS.keyed(f"{result.id}-stats") is not None
    progress = RECORDS.artifacts(flow_run_id, "progress")
    assert [a.data for a in progress] == [100.0]

    # The trainer's output, start to end, is in the flow run's logs (which reach the server in
    # batches, shortly after the flow returns).
    def trainer_lines() -> list[str]:
        return [m for m in RECORDS.logs(flow_run_id) if m.startswith(("step ", "validation at"))]

    lines = poll(lambda: len(trainer_lines()) >= 6 and trainer_lines(), 30)
    assert lines and lines[0].startswith("step 2/12 · loss"), lines
    assert any(line.startswith("validation at step 12: ") for line in lines), lines
    chatter = [
        m
        for m in RECORDS.logs(flow_run_id)
        if m.startswith(LightningChatter.NOISE) or "deprecated" in m or "weights_only" in m
    ]
    assert chatter == []  # the log is the run's own, not Lightning's tips and notices

    started = time.monotonic()
    again = pretrain_flow(
        tiny_shards.shards_id,
        config=config,
        store_url=store.url,
        run_dir=str(tmp_path / "again"),
        return_state=True,
    )
    assert again.result().cached and again.result().id == result.id
    assert time.monotonic() - started < 15
    assert not (tmp_path / "again").exists()  # no training was launched
    assert RECORDS.artifacts(again.state_details.flow_run_id, "progress") == []
    assert store.require(result.id) == manifest


# -- configs refused up front -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"batch_size": 100_000}, r"batch[-_]size"),
        ({"max_position_embeddings": 32}, "max_position_embeddings"),
    ],
    ids=["batch_size", "max_position_embeddings"],
)
def test_a_bad_config_fails_the_flow_before_any_work_naming_the_field(
    tiny_shards, training_config, tmp_path, change, named
):
    store = ArtifactStore(tiny_shards.store_url)
    models_before = {m.id for m in store.list(kind="model")}
    started = time.monotonic()
    state = pretrain_flow(
        tiny_shards.shards_id,
        config=training_config(**change),
        store_url=store.url,
        run_dir=str(tmp_path / "run"),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(InputError, match=named):
        state.result()
    assert time.monotonic() - started < 15  # no trainer was started
    assert not (tmp_path / "run").exists()
    assert {m.id for m in store.list(kind="model")} == models_before


# -- the training process group dies with the flow --------------------------------------------


def trainer_processes(run_dir: Path) -> list[psutil.Process]:
    """Live `python -m bertflow.model.training` processes working in `run_dir`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = p.info["cmdline"] or []
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "bertflow.model.training" in cmdline and str(run_dir) in cmdline:
            found.append(p)
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


@dataclass
class RunningFlow:
    flow: subprocess.Popen
    trainer: psutil.Process
    run_dir: Path
    output: Path
    store: ArtifactStore
    artifact_id: str


@pytest.fixture
def running_flow(tiny_shards, training_config, tmp_path) -> Iterator[RunningFlow]:
    """The flow in its own Python process, once its trainer is training (`fit` has started and
    the trainer keeps a core busy). It trains 100000 steps and prints nothing meanwhile, so no
    write to its closed stdout can end it before the mechanism under test does. Whatever is left
    at the end is killed."""
    store = ArtifactStore(tiny_shards.store_url)
    config = training_config(
        max_steps=100_000, log_every=100_000, val_every=100_000, checkpoint_every=100_000
    )
    artifact_id = plan_pretrain(store, tiny_shards.shards_id, config).artifact_id
    run_dir, output = tmp_path / "run", tmp_path / "flow.log"
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    argv = [
        sys.executable,
        "-c",
        FLOW_SCRIPT,
        tiny_shards.shards_id,
        store.url,
        str(run_dir),
        config.model_dump_json(),
    ]
    with open(output, "wb") as out:
        flow = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    trainer: list[psutil.Process] = []
    try:
        trainer = poll(lambda: trainer_processes(run_dir), 90)
        assert trainer, f"no trainer started; the flow said:\n{output.read_text()[-3000:]}"
        fit_started = poll((run_dir / "logs/tensorboard/hparams.yaml").exists, 90)
        assert fit_started, f"the trainer did not start fit:\n{output.read_text()[-3000:]}"
        busy_from = cpu_seconds(trainer[0])
        assert poll(lambda: cpu_seconds(trainer[0]) - busy_from > 2, 30), "no training steps"
        yield RunningFlow(flow, trainer[0], run_dir, output, store, artifact_id)
    finally:
        flow.kill()
        flow.wait()
        for p in trainer:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow
def test_cancelling_the_flow_run_stops_the_training_process_group_first(running_flow):
    """SIGTERM is how Prefect's runner cancels a flow run: the flow stops the trainer's group
    (a session of its own) before it exits, and its run ends Crashed rather than left Running."""
    run = running_flow
    pgid = os.getpgid(run.trainer.pid)
    assert pgid == run.trainer.pid
    run.flow.send_signal(signal.SIGTERM)
    run.flow.wait(timeout=60)
    assert not group_alive(pgid), "the flow exited before its training group was gone"
    assert trainer_processes(run.run_dir) == []
    assert "Finished in state Crashed" in run.output.read_text()
    assert run.store.get(run.artifact_id) is None
    assert not run.run_dir.exists()  # no checkpoint yet, so nothing for --resume: cleared


@pytest.mark.slow
def test_a_killed_flow_process_takes_the_training_process_group_with_it(running_flow):
    """After SIGKILL the flow can clean nothing up: the trainer notices its parent is gone
    (PR_SET_PDEATHSIG, and a watchdog thread) and kills its own group."""
    run = running_flow
    pgid = os.getpgid(run.trainer.pid)
    run.flow.send_signal(signal.SIGKILL)
    run.flow.wait(timeout=30)
    assert poll(lambda: not group_alive(pgid), 30), "the training group outlived the flow"
    assert trainer_processes(run.run_dir) == []
    assert run.store.get(run.artifact_id) is None
