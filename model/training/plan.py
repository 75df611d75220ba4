"""A training run before it starts: everything checked that can be checked, the model artifact
named, and where the run keeps its checkpoints and logs until the model is published."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bertflow.model.bert import BertConfig
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.loader import LoaderConfig, ShardDataset
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.manifest import InputFingerprint, Manifest, artifact_id
from bertflow.pipeline.core.store import ArtifactStore

RUNS_ENV = "BERTFLOW_RUNS"
RUNS_DIR = ".runs"  # in a local store: training run folders, beside the artifacts
CHECKPOINT_DIR, LAST_CHECKPOINT = "checkpoints", "last.ckpt"
VALIDATION_SEED = 2024  # fixed masking seed of validation, the same for every model
INIT_FOLDER = "hf"  # the export that --init-from reads of a model artifact
INIT_FILES = (f"{INIT_FOLDER}/config.json", f"{INIT_FOLDER}/model.safetensors")


@dataclass(frozen=True)
class PretrainPlan:
    config: TrainConfig
    shards: Manifest
    tokenizer_id: str
    architecture: BertConfig
    world_size: int
    artifact_id: str

    @property
    def inputs(self) -> list[InputFingerprint]:
        return []  # everything it reads is in the store

    @property
    def upstream(self) -> dict[str, str]:
        up = {"shards": self.shards.id}
        if self.config.init_from:
            up["init"] = self.config.init_from
        return up


def plan_pretrain(store: ArtifactStore, shards_id: str, config: TrainConfig) -> PretrainPlan:
    """Check everything that can be checked before training starts, and name the artifact."""
    shards = store.require(shards_id, kind="shards")
    tokenizer_id = shards.upstream["tokenizer"]
    layout = shards.layout
    architecture = config.architecture(int(layout["vocab_size"]))
    if layout["max_seq_len"] > architecture.max_position_embeddings:
        raise InputError(
            f"{shards_id} holds sequences of up to {layout['max_seq_len']} tokens, more than the "
            f"model's max_position_embeddings ({architecture.max_position_embeddings}); raise "
            f"--max-position-embeddings or shard with --max-seq-len "
            f"{architecture.max_position_embeddings}"
        )
    if config.init_from:
        _check_init(store, config.init_from, tokenizer_id, architecture)
    world_size = resolve_world_size(config)
    _check_batch(store, shards_id, config, world_size)
    model_id = artifact_id(
        "model",
        config={
            "train": config.identity(),
            "architecture": asdict(architecture),
            "world_size": world_size,
        },
        upstream={"shards": shards_id, **({"init": config.init_from} if config.init_from else {})},
    )
    return PretrainPlan(config, shards, tokenizer_id, architecture, world_size, model_id)


def _check_init(
    store: ArtifactStore, model_id: str, tokenizer_id: str, architecture: BertConfig
) -> None:
    init = store.require(model_id, kind="model")
    init_tokenizer = init.layout.get("tokenizer")
    if init_tokenizer != tokenizer_id:
        raise InputError(
            f"--init-from {model_id} was trained with tokenizer {init_tokenizer}, but these "
            f"shards were made with tokenizer {tokenizer_id}: token ids would mean different "
            f"words; shard the corpus with {init_tokenizer}"
        )
    theirs = BertConfig(**init.layout["architecture"])
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size"):
        if getattr(theirs, name) != getattr(architecture, name):
            raise InputError(
                f"--init-from {model_id} has {name} {getattr(theirs, name)}, this model "
                f"{getattr(architecture, name)}: use the same preset and sizes"
            )
    if theirs.max_position_embeddings > architecture.max_position_embeddings:
        raise InputError(
            f"--init-from {model_id} has {theirs.max_position_embeddings} positions; "
            f"--max-position-embeddings must be at least that"
        )


def resolve_world_size(config: TrainConfig) -> int:
    """Processes that will train: devices per node x nodes (auto: all GPUs, else 1 CPU)."""
    devices = config.devices.strip()
    gpu = config.accelerator == "gpu" or (
        config.accelerator == "auto" and torch.cuda.is_available()
    )
    if devices in ("auto", "-1"):
        per_node = torch.cuda.device_count() if gpu else 1
    elif "," in devices:
        per_node = len([d for d in devices.split(",") if d.strip()])
    else:
        try:
            per_node = int(devices)
        except ValueError:
            raise InputError(f"--devices {config.devices!r}: a count, a list or auto") from None
        if per_node < 1:
            raise InputError(f"--devices {config.devices!r}: must be at least 1")
    return max(1, per_node) * config.num_nodes


def _check_batch(store: ArtifactStore, shards_id: str, config: TrainConfig, world: int) -> None:
    try:
        ShardDataset(
            store.url, shards_id, "train", train_loader_config(config), rank=0, world_size=world
        )
    except ValueError as e:
        raise InputError(f"--batch-size: {e}") from None


def train_loader_config(config: TrainConfig) -> LoaderConfig:
    return LoaderConfig(
        batch_size=config.batch_size,
        seed=config.seed,
        epochs=None,  # endless: training runs by max_steps
        masking="dynamic" if config.mlm_prob is not None else None,
        mlm_prob=config.mlm_prob,
    )


def default_run_dir(store: ArtifactStore, model_id: str) -> Path:
    """Where a training run keeps its checkpoints and logs until its model is published:
    `$BERTFLOW_RUNS/<id>` when that is set; else beside a local store's artifacts
    (`<store>/.runs/<id>`), so one store is one place; else, for an object store,
    `~/.bertflow/runs/<id>` (checkpoints are written to a filesystem)."""
    if root := os.environ.get(RUNS_ENV):
        return Path(root).expanduser() / model_id
    if store.is_local:
        return Path(store.root) / RUNS_DIR / model_id
    return Path.home() / ".bertflow" / "runs" / model_id


def clear_run(run_dir: Path, published: bool) -> str:
    """Clear what a training run leaves in its folder, and say what was done. Once the model is
    published its artifact holds the logs and the last checkpoint, so nothing is kept; after a
    failure or a cancel the checkpoints and logs stay for `--resume` when a checkpoint was
    written, and go when none was (there is nothing to resume). Only the run's own files are
    touched, so a `--run-dir` that holds other things keeps them."""
    checkpoints = run_dir / CHECKPOINT_DIR
    if not published and any(checkpoints.glob("*.ckpt")):
        return f"kept {run_dir} for --resume (delete it to start over)"
    for own in (checkpoints, run_dir / "logs"):
        shutil.rmtree(own, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only when nothing else is in it
    return f"removed the run folder {run_dir}" + ("" if published else " (no checkpoint)")


def check_upstream(store: ArtifactStore, plan: PretrainPlan) -> None:
    """Every file training reads, checked against its manifest before the first step: the
    shards (both splits and the vocabulary) and, when training continues a model, its weights."""
    store.check_intact(plan.shards)
    if plan.config.init_from:
        store.check_intact(store.require(plan.config.init_from, "model"), INIT_FILES)
