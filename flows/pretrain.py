"""The pretrain flow: shards -> model artifact, training in a subprocess the flow owns.

Training runs as `python -m bertflow.model.training` (the same entry point users launch under
torchrun or SLURM), supervised by `model/training/launcher.py`: when the flow run is cancelled
or times out (Prefect raises in the flow process), the trainer's whole process group is stopped;
if the flow process is killed outright, the trainer kills its group. Its output is streamed into
the flow's logs, and its progress lines drive a Prefect progress artifact and, on a terminal, a
progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from bertflow.flows.records import progress_callbacks
from bertflow.flows.result import StageResult
from bertflow.flows.stage import cached_or_built
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.launcher import run_training
from bertflow.model.training.plan import PretrainPlan, default_run_dir, plan_pretrain
from bertflow.model.training.report import model_markdown
from bertflow.pipeline.core.progress import Progress
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
        store, plan, "Model", build, details=lambda manifest: model_markdown(store, manifest)
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
    artifact (and a bar on a terminal); raise if it fails."""
    logger = get_run_logger()
    max_steps = plan.config.max_steps
    callbacks = progress_callbacks(f"pretraining {plan.artifact_id}")
    progress = Progress("pretrain", max_steps, "step", callbacks, every_s=PROGRESS_EVERY_S)

    def on_progress(record: dict[str, Any]) -> None:
        if "step" in record:
            loss = record.get("metrics", {}).get("loss")
            shown = {"loss": f"{loss:.3f}"} if loss is not None else {}
            progress.advance(int(record["step"]) - progress.state.done, **shown)

    try:
        run_training(
            store,
            plan,
            run_dir,
            resume=resume,
            flow_run_id=flow_run_id,
            on_progress=on_progress,
            on_line=logger.info,
        )
        # The trainer exited cleanly, so every step ran, whatever progress line it printed last.
        progress.advance(max_steps - progress.state.done)
    finally:
        progress.close()
