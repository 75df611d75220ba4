"""The evaluation stage: model -> `evaluation` artifact, with intrinsic and downstream metrics.

- Intrinsic (`intrinsic.py`): MLM loss and accuracy, perplexity and NSP/SOP accuracy on the
  validation shards of the model's own lineage, at fixed 15% masks.
- Downstream (`finetune.py`): the pretrained encoder fine-tuned on each labelled task
  (`model/evaluation/tasks.py` reads them) for several seeds (`EvaluateConfig.task_seeds`); the
  median, mean and spread of each metric, beside baselines on the same split: TF-IDF + logistic
  regression (`baselines.py`) and the same encoder fine-tuned from a random initialisation, so
  every number has a reference. Each run keeps the epoch that scores best on a dev split held
  out of the training examples (`dev_split`); every contender trains on the same reduced
  training set, and the evaluation split chooses nothing.

Everything is checked (the model id, every task file) before any work, and the artifact is
published only once every number exists, so a failed evaluation publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from bertflow.model.evaluation.baselines import tfidf_baseline
from bertflow.model.evaluation.config import (  # re-exported: importers keep this path
    DEFAULT_MAX_SEQ_LEN,
    EvaluateConfig,
)
from bertflow.model.evaluation.finetune import (
    Encoded,
    FinetuneRun,
    encode,
    encoder_state,
    finetune,
)
from bertflow.model.evaluation.intrinsic import batch_count, intrinsic_metrics, validation_dataset
from bertflow.model.evaluation.metrics import HIGHER_IS_BETTER, compute_metrics, summarize_runs
from bertflow.model.evaluation.task_data import TaskData, TaskSplit
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.evaluation.tasks import read_task
from bertflow.model.export import artifact_files, load_export
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Problem
from bertflow.pipeline.core.manifest import InputFingerprint, Manifest, artifact_id, canonical_json
from bertflow.pipeline.core.progress import Progress, ProgressCallback
from bertflow.pipeline.core.seeds import derive_seed
from bertflow.pipeline.core.stage import cached_or_built
from bertflow.pipeline.core.store import ArtifactStore, Published
from bertflow.pipeline.shards.format import VOCAB_FILE

RESULTS_FILE, REPORT_FILE, CURVES_FILE = "results.json", "report.md", "curves.png"


@dataclass(frozen=True)
class EvaluationPlan:
    config: EvaluateConfig
    model: Manifest
    tasks: list[TaskData]
    inputs: list[InputFingerprint]
    max_seq_len: int
    task_set: str
    artifact_id: str

    @property
    def upstream(self) -> dict[str, str]:
        return {"model": self.model.id}


def plan_evaluation(store: ArtifactStore, model_id: str, config: EvaluateConfig) -> EvaluationPlan:
    """Check the model and read every task (bad files fail here, before any work); name the
    artifact by the model, the config and the task files' fingerprints."""
    model = store.require(model_id, kind="model")
    positions = int(model.layout["architecture"]["max_position_embeddings"])
    max_seq_len = config.max_seq_len or min(
        DEFAULT_MAX_SEQ_LEN, positions, trained_length(store, model)
    )
    if max_seq_len > positions:
        raise InputError(
            f"--max-seq-len {max_seq_len} is longer than {model_id}'s {positions} positions"
        )
    tasks = [read_task(spec) for spec in config.tasks]
    inputs = [i for task in tasks for i in task.inputs]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"task names must differ, {twice} appear twice: give each a name=")
    evaluation_id = artifact_id(
        "evaluation",
        config={**config.identity(), "max_seq_len": max_seq_len},
        upstream={"model": model_id},
        inputs=inputs,
    )
    task_set = task_set_key(config.tasks, inputs)
    return EvaluationPlan(config, model, tasks, inputs, max_seq_len, task_set, evaluation_id)


def check_upstream(store: ArtifactStore, model: Manifest) -> None:
    """The files evaluation reads, checked against their manifests: the model's exported folder
    and its shards' validation split (the intrinsic metrics)."""
    hf = model.layout["hf"]
    store.check_intact(model, [f.path for f in model.files if f.path.startswith(f"{hf}/")])
    shards = store.get(model.upstream["shards"]) if "shards" in model.upstream else None
    if shards is not None:
        validation = [s["path"] for s in shards.layout["splits"].get("validation", [])]
        store.check_intact(shards, [*validation, VOCAB_FILE])


def trained_length(store: ArtifactStore, model: Manifest) -> int:
    """The longest sequence the model was pretrained on (its shards'): positions past it were
    never trained, so fine-tuning inputs are cut there by default."""
    shards_id = model.upstream.get("shards")
    shards = store.get(shards_id) if shards_id else None
    if shards is None:
        return DEFAULT_MAX_SEQ_LEN
    return int(shards.layout.get("max_seq_len", DEFAULT_MAX_SEQ_LEN))


def task_set_key(specs: Sequence[TaskSpec], inputs: Sequence[InputFingerprint]) -> str:
    """What makes two evaluations comparable: the same tasks read from the same files."""
    identity = {
        "tasks": [s.identity() for s in specs],
        "inputs": [i.model_dump(mode="json") for i in inputs],
    }
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:20]


# -- running ----------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no GPU is visible to this process")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def load_pretrained(store: ArtifactStore, model: Manifest) -> tuple[Any, Tokenizer]:
    """The model artifact's exported weights as our BertForPreTraining, and its tokenizer."""
    read = artifact_files(store, model.id, model.layout["hf"])
    return load_export(read), Tokenizer.from_str(read("tokenizer.json").decode("utf-8"))


@dataclass(frozen=True)
class PreparedTask:
    """A task as every contender sees it: the same training examples, dev split and seeds."""

    task: TaskData
    train: TaskSplit  # what the model and every baseline train on
    dev: TaskSplit | None  # what chooses each run's epoch; None: the last epoch is kept
    seeds: list[int]


def prepare_task(task: TaskData, spec: TaskSpec, config: EvaluateConfig) -> PreparedTask:
    """The seeded training sample, the dev split held out of it, and the task's seeds."""
    sample = training_sample(task.train, config.max_train_examples, config.seed)
    if task.dev is not None and config.dev_fraction > 0:  # the task's own: nothing carved
        train, dev = sample, task.dev
    else:
        train, dev = dev_split(sample, task.problem, config.dev_fraction, config.seed)
    return PreparedTask(task, train, dev, config.task_seeds(spec, len(train)))


@dataclass
class TaskOutcome:
    """One task's numbers: metric -> summary over seeds, for the model and each baseline."""

    prepared: PreparedTask
    truncated: dict[str, int]
    model: dict[str, dict[str, Any]]
    baselines: dict[str, dict[str, dict[str, Any]]]
    runs: dict[str, list[FinetuneRun]]
    seconds: float

    @property
    def task(self) -> TaskData:
        return self.prepared.task

    def stats(self, max_seq_len: int) -> dict[str, Any]:
        t, dev = self.task, self.prepared.dev
        return {
            "problem": t.problem,
            "num_labels": t.num_labels,
            "label_names": t.label_names,
            "metrics": list(t.metrics),
            "primary": t.metrics[0],
            "evaluation_split": t.evaluation_split,
            "split_origin": t.split_origin,
            "examples": {"train": len(t.train.labels), "evaluation": len(t.evaluation.labels)},
            "trained_on": len(self.prepared.train),  # the same examples for every contender
            "dev": None
            if dev is None
            else {"origin": "files" if dev is t.dev else "train", "examples": len(dev)},
            "seeds": self.prepared.seeds,
            "selection": self.selection(),
            "max_seq_len": max_seq_len,
            "truncated": self.truncated,
            "model": self.model,
            "baselines": self.baselines,
        }

    def selection(self) -> dict[str, Any]:
        """How each fine-tuning run chose its epoch, the epoch it kept and, with a dev split, the
        dev score of every epoch (contender -> one entry per seed)."""
        epochs = {label: [r.selected_epoch for r in rs] for label, rs in self.runs.items()}
        if self.prepared.dev is None:
            return {"by": "last epoch", "epochs": epochs}
        scores = {label: [r.epoch_scores for r in rs] for label, rs in self.runs.items()}
        return {"by": f"best dev {self.task.metrics[0]}", "epochs": epochs, "dev_scores": scores}


def evaluate(
    store: ArtifactStore,
    plan: EvaluationPlan,
    callbacks: Sequence[ProgressCallback] = (),
) -> tuple[dict[str, Any], dict[str, TaskOutcome], list[str]]:
    """Every number of the evaluation: (intrinsic metrics, task outcomes, warnings)."""
    c = plan.config
    device = resolve_device(c.device)
    network, tokenizer = load_pretrained(store, plan.model)
    architecture = network.config
    encoder = encoder_state(network.state_dict())
    warnings: list[str] = []
    dataset = None
    if c.intrinsic:
        dataset = validation_dataset(store, plan.model.upstream["shards"], c.intrinsic_batch_size)
        if dataset is None:
            warnings.append(
                f"{plan.model.upstream['shards']} has no validation examples: no intrinsic metrics"
            )
    prepared = [prepare_task(t, spec, c) for t, spec in zip(plan.tasks, c.tasks, strict=True)]
    encoded = [_encode_task(tokenizer, p, plan.max_seq_len) for p in prepared]
    contenders = 1 + ("random-init" in c.baselines)
    total = (batch_count(dataset, c.intrinsic_max_batches) if dataset else 0) + sum(
        contenders * len(p.seeds) * c.epochs * -(-len(p.train) // c.batch_size) for p in prepared
    )
    progress = Progress("evaluate", total, "step", callbacks)
    try:
        intrinsic: dict[str, Any] = {}
        if c.intrinsic and dataset is None:
            intrinsic = {"not_measured": "the shards have an empty validation split"}
        if dataset is not None:
            progress.phase("intrinsic")
            nsp = plan.model.layout.get("objective") != "none"
            intrinsic = intrinsic_metrics(
                network,
                dataset,
                nsp=nsp,
                device=device,
                max_batches=c.intrinsic_max_batches,
                on_batch=progress.step,
            )
        outcomes = {}
        for task, data in zip(prepared, encoded, strict=True):
            name = task.task.name
            outcomes[name] = _run_task(task, data, architecture, encoder, c, device, progress)
            for split, n in outcomes[name].truncated.items():
                if n:
                    warnings.append(
                        f"{name}: {n:,} {split} examples longer than "
                        f"{plan.max_seq_len} tokens were truncated"
                    )
    finally:
        progress.close()
    return intrinsic, outcomes, warnings


def training_sample(train: TaskSplit, limit: int | None, seed: int) -> TaskSplit:
    """At most `limit` training examples, a seeded sample in file order: what the model and
    every baseline train on."""
    if limit is None or len(train.labels) <= limit:
        return train
    pick = np.sort(np.random.default_rng(seed).permutation(len(train.labels))[:limit])
    return _take(train, pick, train.source)


def dev_split(
    train: TaskSplit, problem: Problem, fraction: float, seed: int
) -> tuple[TaskSplit, TaskSplit | None]:
    """(train, dev): a seeded `fraction` of the training examples held out to choose each run's
    epoch, drawn class by class for classification (a class of two or more examples gives at
    least one, and keeps at least one to train on), both in file order. Every contender gets
    the same split. Fraction 0, or too few examples to spare one: no dev split."""
    if fraction == 0:
        return train, None
    rng = np.random.default_rng(derive_seed(seed, "dev"))
    if problem == "classification":
        groups = [np.flatnonzero(train.labels == c) for c in np.unique(train.labels)]
    else:
        groups = [np.arange(len(train.labels))]
    held = [rng.permutation(g)[: _held_out(len(g), fraction)] for g in groups]
    dev = np.sort(np.concatenate(held))
    if dev.size == 0:
        return train, None
    keep = np.setdiff1d(np.arange(len(train.labels)), dev)
    return _take(train, keep, train.source), _take(train, dev, f"{train.source} (dev, seeded)")


def _held_out(n: int, fraction: float) -> int:
    """round(n * fraction), at least 1 and at most n - 1 (0 when n < 2)."""
    return max(0, min(max(round(n * fraction), 1), n - 1))


def _take(split: TaskSplit, pick: np.ndarray, source: str) -> TaskSplit:
    return replace(
        split,
        texts=[split.texts[i] for i in pick],
        pairs=[split.pairs[i] for i in pick] if split.pairs is not None else None,
        labels=split.labels[pick],
        source=source,
    )


@dataclass(frozen=True)
class EncodedTask:
    """A prepared task's splits as token ids."""

    train: Encoded
    dev: Encoded | None
    evaluation: Encoded


def _encode_task(tokenizer: Tokenizer, task: PreparedTask, max_seq_len: int) -> EncodedTask:
    def split(s: TaskSplit) -> Encoded:
        return encode(tokenizer, s.texts, s.pairs, s.labels, max_seq_len)

    dev = split(task.dev) if task.dev is not None else None
    return EncodedTask(split(task.train), dev, split(task.task.evaluation))


def _run_task(
    prepared: PreparedTask,
    data: EncodedTask,
    architecture: Any,
    encoder: dict[str, torch.Tensor],
    c: EvaluateConfig,
    device: torch.device,
    progress: Progress,
) -> TaskOutcome:
    started = time.monotonic()
    task, labels = prepared.task, data.evaluation.labels
    primary = task.metrics[0]

    def scorer(truth: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda predictions: compute_metrics([primary], predictions, truth)[primary]

    def runs(weights: dict[str, torch.Tensor] | None, label: str) -> list[FinetuneRun]:
        out = []
        for seed in prepared.seeds:
            progress.phase(f"{task.name}: {label}, seed {seed}")
            out.append(
                finetune(
                    architecture,
                    weights,
                    data.train,
                    data.evaluation,
                    problem=task.problem,
                    num_labels=task.num_labels,
                    config=c.finetune_config(architecture.hidden_size),
                    seed=seed,
                    device=device,
                    score=scorer(labels),
                    on_step=progress.step,
                    dev=data.dev,
                    dev_score=scorer(data.dev.labels) if data.dev else None,
                    higher_is_better=HIGHER_IS_BETTER[primary],
                )
            )
        return out

    def summary(predictions: list[np.ndarray]) -> dict[str, dict[str, Any]]:
        per_run = [compute_metrics(task.metrics, p, labels) for p in predictions]
        return {m: summarize_runs([r[m] for r in per_run]).as_dict() for m in task.metrics}

    all_runs = {"pretrained": runs(encoder, "pretrained")}
    baselines: dict[str, dict[str, dict[str, Any]]] = {}
    for name in c.baselines:
        if name == "random-init":
            all_runs[name] = runs(None, "random init")
            baselines[name] = summary([r.predictions for r in all_runs[name]])
        else:
            progress.phase(f"{task.name}: tf-idf")
            train, ev = prepared.train, task.evaluation
            result = tfidf_baseline(
                train.texts,
                train.pairs,
                train.labels,
                ev.texts,
                ev.pairs,
                task.problem,
                seed=c.seed,
            )
            baselines[name] = summary([result.predictions])
    truncated = {
        "train": data.train.truncated,
        "dev": data.dev.truncated if data.dev else 0,
        "evaluation": data.evaluation.truncated,
    }
    return TaskOutcome(
        prepared=prepared,
        truncated=truncated,
        model=summary([r.predictions for r in all_runs["pretrained"]]),
        baselines=baselines,
        runs=all_runs,
        seconds=time.monotonic() - started,
    )


# -- publishing -------------------------------------------------------------------------------


def build_and_publish(
    store: ArtifactStore,
    plan: EvaluationPlan,
    callbacks: Sequence[ProgressCallback] = (),
    flow_run_id: str | None = None,
) -> Published:
    """Evaluate, then stage results.json, report.md and curves.png and publish them."""
    from bertflow.model.evaluation.report import plot_curves, render_report

    started = time.monotonic()
    check_upstream(store, plan.model)
    intrinsic, outcomes, warnings = evaluate(store, plan, callbacks)
    stats: dict[str, Any] = {
        "intrinsic": intrinsic,
        "tasks": {name: o.stats(plan.max_seq_len) for name, o in outcomes.items()},
        "lr": plan.config.resolved_lr(int(plan.model.layout["architecture"]["hidden_size"])),
        "task_seconds": {name: round(o.seconds, 1) for name, o in outcomes.items()},
        "device": str(resolve_device(plan.config.device)),
        "seconds": round(time.monotonic() - started, 1),
        "warnings": warnings,
    }
    layout = {
        "results": RESULTS_FILE,
        "report": REPORT_FILE,
        "curves": CURVES_FILE,
        "task_set": plan.task_set,
        "model": plan.model.id,
        "shards": plan.model.upstream.get("shards"),
    }
    curves = {
        name: {label: [r.loss_curve for r in rs] for label, rs in o.runs.items()}
        for name, o in outcomes.items()
    }
    epoch_scores = {
        name: {label: [r.epoch_scores for r in rs] for label, rs in o.runs.items()}
        for name, o in outcomes.items()
    }
    results = {
        "intrinsic": intrinsic,
        "tasks": stats["tasks"],
        "curves": curves,
        "epoch_scores": epoch_scores,
    }
    with store.staging(plan.artifact_id) as staging:
        (staging / RESULTS_FILE).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        (staging / REPORT_FILE).write_text(
            render_report(store, plan.model, plan.config.model_dump(mode="json"), stats)
        )
        primary = {name: o.task.metrics[0] for name, o in outcomes.items()}
        plot_curves(
            store,
            plan.model,
            curves,
            epoch_scores,
            primary,
            staging / CURVES_FILE,
            title=plan.artifact_id,
        )
        return store.publish(
            staging,
            plan.artifact_id,
            config=plan.config.model_dump(mode="json"),
            upstream=plan.upstream,
            inputs=plan.inputs,
            stats=stats,
            layout=layout,
            summary=evaluation_summary(stats),
            flow_run_id=flow_run_id,
        )


def evaluation_summary(stats: dict[str, Any]) -> str:
    """One line on an evaluation: MLM accuracy and each task's primary metric (median)."""
    parts = []
    if "mlm_acc" in (intrinsic := stats.get("intrinsic", {})):
        parts.append(f"MLM accuracy {intrinsic['mlm_acc']:.1%}")
    elif "not_measured" in intrinsic:
        parts.append(f"intrinsic not measured ({intrinsic['not_measured']})")
    for name, task in stats.get("tasks", {}).items():
        primary = task["primary"]
        parts.append(f"{name} {primary} {task['model'][primary]['median']:.4f}")
    return "evaluation: " + (", ".join(parts) or "no metrics")


def run_evaluation(store: ArtifactStore, model_id: str, config: EvaluateConfig) -> Published:
    """Evaluate without Prefect: the cached artifact when it exists."""
    plan = plan_evaluation(store, model_id, config)
    return cached_or_built(store, plan, lambda: build_and_publish(store, plan))
