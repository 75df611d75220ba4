"""The pretrain flow: shards -> model artifact, training in a subprocess the flow owns.

Training runs as `python -m bertflow.model.training` (the same entry point users launch under
torchrun or SLURM), supervised by `model/training/launcher.py`: when the flow run is cancelled
or times out (Prefect raises in the flow process), the trainer's whole process group is stopped;
if the flow process is killed outright, the trainer kills its group. Its output is streamed into
the flow's logs, and its progress lines drive a Prefect progress artifact and, on a terminal, a
progress bar.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from tqdm import tqdm

from bertflow.flows.records import embedded_png, report_stage_progress
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.launcher import run_training
from bertflow.model.training.plan import PretrainPlan, default_run_dir, plan_pretrain
from bertflow.pipeline.core.manifest import Manifest
from bertflow.pipeline.core.store import ArtifactStore, Published

PROGRESS_EVERY_S = 5.0


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


def launch_training(
    store: ArtifactStore,
    plan: PretrainPlan,
    run_dir: Path,
    *,
    resume: bool = False,
    flow_run_id: str | None = None,
) -> None:
    """Run the trainer to the end, its output in the run's logs and its steps in a progress
    artifact; raise if it fails."""
    logger = get_run_logger()
    progress = TrainingProgress(plan.config.max_steps, f"pretraining {plan.artifact_id}")
    try:
        run_training(
            store,
            plan,
            run_dir,
            resume=resume,
            flow_run_id=flow_run_id,
            on_progress=progress.update,
            on_line=logger.info,
        )
    finally:
        progress.close()
    progress.complete()


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
