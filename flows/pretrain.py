"""The pretrain flow: shards -> model artifact, training in a subprocess the flow owns.

Training runs as `python -m bertflow.model.training` (the same entry point users launch under
torchrun or SLURM) in its own session, so its whole process group (local DDP ranks, loader
workers) can be signalled at once: when the flow run is cancelled or times out (Prefect raises
in the flow process), the group is terminated, then killed; if the flow process itself is killed
outright, the trainer notices its parent is gone and kills its group. Its output is streamed
into the flow's logs, and its progress lines drive a Prefect progress artifact and, on a
terminal, a progress bar.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from tqdm import tqdm

from bertflow.flows.records import embedded_png, report_stage_progress
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.model.training.train import (
    PROGRESS_PREFIX,
    WATCH_PARENT_ENV,
    PretrainPlan,
    TrainConfig,
    clear_run,
    default_run_dir,
    plan_pretrain,
)
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore, Published

KILL_GRACE_S = 10.0
PROGRESS_EVERY_S = 5.0
TAIL_LINES = 40


@flow(name="pretrain")
def pretrain_flow(
    shards_id: str,
    config: TrainConfig | None = None,
    store_url: str | None = None,
    resume: bool = False,
    run_dir: str | None = None,
) -> StageResult:
    """Pretrain BERT (MLM + NSP) on a shards artifact with PyTorch Lightning."""
    config = config or TrainConfig()
    store = ArtifactStore(store_url)
    plan = plan_pretrain(store, shards_id, config)  # bad configs fail here, before any work
    folder = Path(run_dir).expanduser() if run_dir else default_run_dir(store, plan.artifact_id)

    def build() -> Published:
        launch_training(store, plan, folder, resume=resume, flow_run_id=flow_run.get_id())
        return Published(store.require(plan.artifact_id), cached=False)

    return cached_or_built(
        store,
        plan.artifact_id,
        "Model",
        build,
        upstream=plan.upstream,
        input_uris=[],
        details=lambda manifest: model_report(store, manifest),
    )


def training_command(
    store: ArtifactStore, plan: PretrainPlan, run_dir: Path, resume: bool, flow_run_id: str | None
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "bertflow.model.training",
        "--shards",
        plan.shards.id,
        "--store",
        store.url,
        "--run-dir",
        str(run_dir),
        "--config-json",
        plan.config.model_dump_json(),
    ]
    if resume:
        command.append("--resume")
    if flow_run_id:
        command += ["--flow-run-id", str(flow_run_id)]
    return command


def launch_training(
    store: ArtifactStore,
    plan: PretrainPlan,
    run_dir: Path,
    *,
    resume: bool = False,
    flow_run_id: str | None = None,
) -> None:
    """Run training to the end in its own process group; raise if it fails."""
    logger = get_run_logger()
    command = training_command(store, plan, run_dir, resume, flow_run_id)
    env = {**os.environ, WATCH_PARENT_ENV: "1", "PYTHONUNBUFFERED": "1"}
    logger.info(f"training {plan.artifact_id} in {run_dir}: {' '.join(command[:3])} ...")
    progress = TrainingProgress(plan.config.max_steps, f"pretraining {plan.artifact_id}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=env,
        start_new_session=True,
    )
    published = False
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line.startswith(PROGRESS_PREFIX):
                progress.update(json.loads(line[len(PROGRESS_PREFIX) :]))
                continue
            tail.append(line)
            if line:
                logger.info(line)
        code = process.wait()
        published = code == 0 and store.get(plan.artifact_id) is not None
    finally:
        stop_group(process)
        progress.close()
        logger.info(clear_run(run_dir, published))  # a cancelled run's leftovers too
    if code != 0:
        last = "\n".join(tail)
        raise RuntimeError(f"training {plan.artifact_id} failed (exit {code}):\n{last}")
    progress.complete()


def stop_group(process: subprocess.Popen, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the process's group, then SIGKILL whatever is left after `grace_s`."""
    if process.poll() is not None and not _group_alive(process.pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _group_alive(process.pid):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingProgress:
    """Steps done: a Prefect progress artifact (throttled) and a bar on a terminal."""

    def __init__(self, max_steps: int, description: str):
        self.max_steps = max_steps
        self.artifact_id = create_progress_artifact(progress=0.0, description=description)
        self._bar = tqdm(
            total=max_steps,
            unit="step",
            desc="pretrain",
            disable=not sys.stderr.isatty(),
            file=sys.stderr,
        )
        self._last_update = 0.0

    def update(self, record: dict) -> None:
        if "step" not in record:
            return
        step = int(record["step"])
        self._bar.update(step - self._bar.n)
        loss = record.get("metrics", {}).get("loss")
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        now = time.monotonic()
        if now - self._last_update >= PROGRESS_EVERY_S or step >= self.max_steps:
            self._last_update = now
            update_progress_artifact(
                self.artifact_id, progress=round(100 * step / self.max_steps, 1)
            )
            report_stage_progress(step / self.max_steps)

    def complete(self) -> None:
        """The trainer exited cleanly, so all steps ran, whatever progress line it printed last."""
        update_progress_artifact(self.artifact_id, progress=100.0)

    def close(self) -> None:
        self._bar.close()


def model_report(store: ArtifactStore, manifest: Manifest) -> str:
    s, arch = manifest.stats, manifest.layout["architecture"]
    val = s.get("validation", {})
    lines = [
        "## Model",
        "",
        f"{arch['num_layers']} layers x {arch['hidden_size']} hidden, {arch['num_heads']} heads, "
        f"{s['parameters']:,} parameters, vocabulary {arch['vocab_size']:,}; trained "
        f"{s['steps']:,} steps at global batch {s['global_batch']} on {s['world_size']} x "
        f"{s['device']} ({s['precision']}), {s['seconds']:,} s.",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| train loss (first -> last window) | {s['first_train_loss']:.4f} -> "
        f"{s['train_loss']:.4f} |",
    ]
    for key in ("mlm_loss", "mlm_acc", "perplexity", "nsp_acc", "examples"):
        if key in val:
            lines.append(f"| validation {key} | {val[key]:.4f} |")
    if s.get("tokens_per_s"):
        lines.append(f"| tokens/s (median window) | {s['tokens_per_s']:,.0f} |")
    if s.get("mfu"):
        lines.append(f"| MFU (median window) | {s['mfu']:.1%} |")
    layout = manifest.layout
    lines += [
        "",
        embedded_png(store, manifest.id, layout["loss_curve"], "Loss curve"),
        "",
        f"HuggingFace export: `{store.uri(manifest.id, layout['hf'])}/` "
        f"(`bertflow export {manifest.id} --out DIR`).",
    ]
    return "\n".join(lines)
