"""Pretraining quality: our training against transformers' BertForPreTraining in a plain PyTorch
loop, on the same examples with the same recipe and budget, in one run.

    python bench/quality.py [--steps N] [--preset tiny] [--batch-size B] [--lr LR]
                            [--seq-len L] [--seed S] [--config pipeline.yaml] [--store DIR]
                            [--task SPEC] [--finetune-seeds K] [--finetune-examples N]

Data: the demo preset's corpus, tokenizer and first phase's shards (`demo()` in
`flows/pipeline_config.py`, or the pipeline YAML given by --config), made by the stages' own
functions in --store (default: a temporary folder, removed afterwards; a folder given is reused,
its artifacts cached). Training options left out keep that config's values; the warm-up stays
the same share of the steps.

The contenders train from the same initial weights (ours as `train` draws them: torch seeded
with the run's seed, then the model built; transformers' model is given them):
- ours: `plan_pretrain` + `train` as `bertflow pretrain` runs them (Lightning, our loader with
  dynamic masking, the MLM head at the masked positions only);
- transformers: `BertForPreTraining` (attn_implementation="sdpa") and its own `loss`, in a plain
  loop over a DataLoader of the shards' train examples (read with pyarrow from the shard files,
  stored unmasked), padded, collated and masked by `DataCollatorForLanguageModeling` (the same
  rate, 80/10/10), NSP labels from the shards. The same AdamW (`parameter_groups`: no decay on
  biases and LayerNorm; fused), warm-up and decay (`lr_factor`), batch size, gradient
  clipping, precision, loader workers and torch threads. Its handicap is the MLM head and loss at
  every position, as users run it; it is not given our tricks.

Measured alike for both:
- validation MLM loss, MLM accuracy and NSP accuracy: `intrinsic_metrics` on the shards'
  validation split at the evaluate stage's fixed masks, the transformers model saved with
  `save_pretrained` and loaded into ours by `load_export`;
- tokens/s: non-padding tokens trained on over the seconds from the first step's start to the
  last step's end (the first batch's fetch and the loader's start-up left out; no validation or
  checkpoint happens inside a run);
- downstream: the task's primary metric on its evaluation split after `finetune`, as the
  evaluate stage runs it (`prepare_task`: its training sample, the dev split that picks each
  run's epoch, its seeds; the demo evaluation's recipe), the median over the seeds.

Beside each run, the share of the machine's CPU that the hypervisor gave to other machines while
it trained (`steal`): runs follow one another, so a neighbour busy during one of them slows only
that one, and its tokens/s (and the ratios against it) should be read with that in mind.

Equal steps: both trained --steps steps, each with seed and seed + 1. Noise: the mean of the two
contenders' seed-to-seed differences (one contender's seeds alone would leave the other's luck
unmeasured: one transformers seed, the same one every run, gave the same sign three times).
Equal time: the faster contender trained again with its steps scaled so that it takes about the
slower one's seconds (warm-up and decay over its own steps), set beside the slower one's --steps
run. Runs follow one another, so machine load that drifts during the benchmark shows in the
seconds.

Goals, printed under the table: validation MLM loss at equal steps equal within noise (the
difference of the two seeds' means at most NOISE_MULTIPLE x the noise), ours at least
GOAL_TOKENS_RATIO x transformers' tokens/s, and ours the better model at equal time (lower
validation MLM loss, and a downstream score no worse when there is a task).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import transformers
from pydantic import BaseModel
from steal import Steal  # bench/ is the script's folder, so on sys.path
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset
from train_step import hf_twin

from bertflow.flows.pipeline_config import PipelineConfig, demo, load_config
from bertflow.model.bert import BertForPreTraining
from bertflow.model.evaluation.config import DEFAULT_MAX_SEQ_LEN, EvaluateConfig
from bertflow.model.evaluation.finetune import Encoded, encode, encoder_state, finetune
from bertflow.model.evaluation.intrinsic import intrinsic_metrics, validation_dataset
from bertflow.model.evaluation.metrics import HIGHER_IS_BETTER, compute_metrics
from bertflow.model.evaluation.stage import (
    PreparedTask,
    load_pretrained,
    prepare_task,
    resolve_device,
)
from bertflow.model.evaluation.task_data import TaskSplit
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.model.evaluation.tasks import read_task
from bertflow.model.export import folder_files, load_export
from bertflow.model.training.config import TrainConfig
from bertflow.model.training.launcher import PROGRESS_PREFIX
from bertflow.model.training.module import OptimConfig, adamw, lr_factor
from bertflow.model.training.plan import plan_pretrain
from bertflow.model.training.train import resolve_precision, train
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.store import ArtifactStore
from bertflow.pipeline.ingest.stage import ingest
from bertflow.pipeline.shards.stage import make_shards
from bertflow.pipeline.tokenizer.stage import make_tokenizer

OURS = "bertflow (plan_pretrain + train)"
ANCHOR = "transformers BertForPreTraining, plain loop"
FALLBACK_TASK = "demo-era"  # the built-in task, when the shared SST-2 is not beside the checkout
GOAL_TOKENS_RATIO = 3.0  # ours trains on at least this many times transformers' tokens/s
NOISE_MULTIPLE = 2.0  # "equal within noise": |ours - transformers| <= this x the seed noise
PAD_TO_MULTIPLE = 8  # as our loader pads
SHARD_COLUMNS = ["input_ids", "segment_a_len", "next_sentence_label"]

Config = TypeVar("Config", bound=BaseModel)


def changed(config: Config, **fields: Any) -> Config:
    """A copy of a pydantic config with `fields` changed, validated again (derived defaults too)."""
    return type(config).model_validate({**config.model_dump(), **fields})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- data and recipe -------------------------------------------------------------------------------


def build_shards(store: ArtifactStore, pipeline: PipelineConfig, seq_len: int | None) -> str:
    """The pipeline's corpus, tokenizer and first phase's shards (at `seq_len` when given), made
    by the stages or found in the store; returns the shards id."""
    corpus = ingest(store, pipeline.ingest).manifest.id
    tokenizer = make_tokenizer(store, corpus, pipeline.tokenizer).manifest.id
    shard = pipeline.phases[0].shard
    if seq_len is not None and seq_len != shard.max_seq_len:
        shard = changed(shard, max_seq_len=seq_len, max_predictions=None)  # 15% of the new length
    return make_shards(store, corpus, tokenizer, shard).manifest.id


def recipe(base: TrainConfig, steps: int, seed: int) -> TrainConfig:
    """`base` for `steps` steps on one device, its warm-up the same share of them; no validation
    or checkpoint inside the run (the transformers loop has neither)."""
    warmup = round(base.resolved_warmup() * steps / base.max_steps)
    return changed(
        base,
        max_steps=steps,
        warmup_steps=warmup,
        seed=seed,
        devices="1",
        val_every=steps + 1,
        checkpoint_every=steps + 1,
    )


def training_device(config: TrainConfig) -> torch.device:
    gpu = config.accelerator != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


@dataclass
class Run:
    contender: str
    seed: int
    steps: int
    seconds: float  # the first step's start to the last step's end
    tokens: int  # non-padding tokens trained on
    model: BertForPreTraining  # the trained weights, in our model
    validation: dict[str, float] = field(default_factory=dict)
    downstream: float | None = None
    stolen: float | None = None  # share of the CPU other machines had meanwhile (steal)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


# -- ours ------------------------------------------------------------------------------------------


class StepClock(L.Callback):
    """Seconds from the first training step's start to the last one's end, and the non-padding
    tokens of their batches (summed on the device: no host sync but at the two ends)."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.ended = 0.0
        self.tokens: torch.Tensor | int = 0

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, *_: Any) -> None:
        if self.started is None:
            synchronize(module.device)
            self.started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: Any, outputs: Any, batch: Any, *_: Any
    ) -> None:
        self.tokens = self.tokens + batch["attention_mask"].sum()
        if trainer.global_step >= trainer.max_steps:
            synchronize(module.device)
            self.ended = time.perf_counter()

    @property
    def seconds(self) -> float:
        assert self.started is not None, "no training step ran"
        return self.ended - self.started


class WithoutProgressRecords(io.TextIOBase):
    """A stdout that drops the JSON progress records training prints for the Prefect task and
    passes its readable lines on."""

    def __init__(self, out: TextIO):
        self.out, self.pending = out, ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if not line.startswith(PROGRESS_PREFIX):
                self.out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def train_ours(store: ArtifactStore, shards_id: str, config: TrainConfig) -> Run:
    """`bertflow pretrain` in this process: plan, train, publish; the published weights."""
    plan = plan_pretrain(store, shards_id, config)
    clock = StepClock()
    with (
        tempfile.TemporaryDirectory(prefix="bertflow-quality-run-") as run_dir,
        contextlib.redirect_stdout(WithoutProgressRecords(sys.stdout)),
    ):
        outcome = train(store, plan, Path(run_dir), callbacks=[clock])
    assert outcome.published is not None, "training stopped before max_steps"
    model, _ = load_pretrained(store, outcome.published.manifest)
    tokens = int(clock.tokens)
    return Run(OURS, config.seed, config.max_steps, clock.seconds, tokens, model)


# -- transformers ----------------------------------------------------------------------------------


class ShardExamples(Dataset):
    """A shards split as transformers users feed a collator: one dict of lists per example (the
    ids unmasked, as stored for dynamic masking), with token types from segment A's length and
    the special-tokens mask that spares the collator a per-example tokenizer call."""

    def __init__(self, files: list[Path], special_ids: list[int]):
        table = pa.concat_tables([pq.read_table(f, columns=SHARD_COLUMNS) for f in files])
        ids = table.column("input_ids").combine_chunks()
        self.offsets = ids.offsets.to_numpy()  # (N + 1,) into values
        self.values = ids.values.to_numpy().astype(np.int64)  # (T,)
        self.segment_a = table.column("segment_a_len").to_numpy()  # len("[CLS] A [SEP]")
        self.nsp = table.column("next_sentence_label").to_numpy()
        self.special = np.asarray(special_ids)

    def __len__(self) -> int:
        return len(self.nsp)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = self.values[self.offsets[i] : self.offsets[i + 1]]
        segment_b = np.arange(len(ids)) >= self.segment_a[i]
        return {
            "input_ids": ids.tolist(),
            "token_type_ids": segment_b.astype(np.int64).tolist(),
            "special_tokens_mask": np.isin(ids, self.special).astype(np.int64).tolist(),
            "next_sentence_label": int(self.nsp[i]),
        }


def hf_loader(
    store: ArtifactStore, shards_id: str, config: TrainConfig, device: torch.device
) -> DataLoader:
    """The train split shuffled each epoch, masked by DataCollatorForLanguageModeling, in
    `config.num_workers` persistent workers (as many as ours)."""
    manifest = store.require(shards_id, kind="shards")
    folder = store.local_path(shards_id)
    if folder is None:
        raise SystemExit("--store must be a local folder: the transformers loop reads its files")
    files = [folder / entry["path"] for entry in manifest.layout["splits"]["train"]]
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        store.local_path(manifest.upstream["tokenizer"])
    )
    collator = transformers.DataCollatorForLanguageModeling(
        tokenizer,
        mlm_probability=config.mlm_prob or manifest.layout["mlm_prob"],
        pad_to_multiple_of=PAD_TO_MULTIPLE,
        seed=config.seed,
    )
    workers = config.num_workers
    return DataLoader(
        ShardExamples(files, tokenizer.all_special_ids),
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=collator,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        # a fork copies threads half-way: spawn once other threads run (as make_dataloader does)
        multiprocessing_context="spawn" if workers and threading.active_count() > 1 else None,
    )


def endless(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from loader


def autocast(device: torch.device, config: TrainConfig) -> contextlib.AbstractContextManager:
    precision = resolve_precision(config)
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "32-true":
        return contextlib.nullcontext()
    raise SystemExit(f"precision {precision}: the transformers loop runs 32-true or bf16-mixed")


def train_hf(store: ArtifactStore, shards_id: str, config: TrainConfig) -> Run:
    """transformers' model from ours' initial weights, trained `config.max_steps` steps."""
    device = training_device(config)
    layout = store.require(shards_id, kind="shards").layout
    torch.manual_seed(config.seed)  # then the model built: the weights `train` starts from
    model = hf_twin(BertForPreTraining(config.architecture(int(layout["vocab_size"]))))
    model.to(device).train()
    optim = OptimConfig.of(config)  # what `train` builds from it
    optimizer = adamw(model, optim, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, optim))
    batches = endless(hf_loader(store, shards_id, config, device))
    batch = next(batches)  # the loader's start-up is not training time
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    synchronize(device)
    started = time.perf_counter()
    for step in range(config.max_steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, config):
            loss = model(**batch).loss  # MLM over every position's logits + NSP
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch["attention_mask"].sum()
        if step + 1 < config.max_steps:
            batch = next(batches)
    synchronize(device)
    seconds = time.perf_counter() - started
    return Run(ANCHOR, config.seed, config.max_steps, seconds, int(tokens), into_ours(model))


def into_ours(model: transformers.BertForPreTraining) -> BertForPreTraining:
    """transformers' weights in our model, through the files users would move them with."""
    with tempfile.TemporaryDirectory(prefix="bertflow-quality-hf-") as folder:
        model.save_pretrained(folder)
        return load_export(folder_files(Path(folder)))


# -- measuring -------------------------------------------------------------------------------------


def validate(run: Run, store: ArtifactStore, shards_id: str, evaluation: EvaluateConfig) -> None:
    """The evaluate stage's intrinsic metrics of the run's model."""
    dataset = validation_dataset(store, shards_id, evaluation.intrinsic_batch_size)
    assert dataset is not None, "checked in main"
    nsp = store.require(shards_id).layout["objective"] != "none"
    run.validation = intrinsic_metrics(
        run.model,
        dataset,
        nsp=nsp,
        device=resolve_device(evaluation.device),
        max_batches=evaluation.intrinsic_max_batches,
    )


@dataclass(frozen=True)
class Downstream:
    """A task prepared and encoded once as the evaluate stage does (its training sample, the dev
    split that picks each run's epoch, its seeds), fine-tuned on by every model the same way."""

    prepared: PreparedTask
    train: Encoded
    dev: Encoded | None
    evaluation: Encoded
    config: EvaluateConfig

    @property
    def name(self) -> str:
        return self.prepared.task.name

    @property
    def metric(self) -> str:
        return self.prepared.task.metrics[0]

    def score(self, labels: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda predictions: compute_metrics([self.metric], predictions, labels)[self.metric]


def prepare_downstream(
    spec: TaskSpec,
    store: ArtifactStore,
    shards_id: str,
    evaluation: EvaluateConfig,
    max_seq_len: int,
) -> Downstream | None:
    """The task encoded with the shards' tokenizer, or None (saying why) when it cannot be read."""
    try:
        prepared = prepare_task(read_task(spec), spec, evaluation)
    except InputError as e:
        print(f"no downstream column: task {spec.path!r} cannot be read ({e}); pass --task")
        return None
    folder = store.local_path(store.require(shards_id).upstream["tokenizer"])
    assert folder is not None, "hf_loader refuses a remote store first"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def encoded(s: TaskSplit) -> Encoded:
        return encode(tokenizer, s.texts, s.pairs, s.labels, max_seq_len)

    dev = encoded(prepared.dev) if prepared.dev is not None else None
    return Downstream(
        prepared, encoded(prepared.train), dev, encoded(prepared.task.evaluation), evaluation
    )


def downstream_score(model: BertForPreTraining, d: Downstream) -> float:
    """The median over the task's seeds of the evaluation split's primary metric, each run
    keeping the epoch that scored best on the dev split."""
    task, architecture = d.prepared.task, model.config
    scores = []
    for seed in d.prepared.seeds:
        run = finetune(
            architecture,
            encoder_state(model.state_dict()),
            d.train,
            d.evaluation,
            problem=task.problem,
            num_labels=task.num_labels,
            config=d.config.finetune_config(architecture.hidden_size),
            seed=seed,
            device=resolve_device(d.config.device),
            score=d.score(d.evaluation.labels),
            dev=d.dev,
            dev_score=d.score(d.dev.labels) if d.dev is not None else None,
            higher_is_better=HIGHER_IS_BETTER[d.metric],
        )
        scores.append(d.score(d.evaluation.labels)(run.predictions))
    return statistics.median(scores)


# -- the report ------------------------------------------------------------------------------------


def table(rows: list[tuple[str, Run]], anchor: Run, metric: str | None) -> list[str]:
    """Markdown rows: each run's budget, speed beside the anchor's, and model quality."""
    header = (
        "| at | contender | seed | steps | train s | tokens/s | x transformers "
        "| val MLM loss | val MLM acc | val NSP acc | steal |"
    )
    lines = [
        header + (f" {metric} |" if metric else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if metric else ""),
    ]
    for at, r in rows:
        v = r.validation
        nsp = v.get("nsp_acc", float("nan"))
        line = (
            f"| {at} | {r.contender} | {r.seed} | {r.steps:,} | {r.seconds:,.1f} "
            f"| {r.tokens_per_s:,.0f} | {r.tokens_per_s / anchor.tokens_per_s:.2f} "
            f"| {v['mlm_loss']:.3f} | {v['mlm_acc']:.3f} | {nsp:.3f} "
            f"| {'—' if r.stolen is None else f'{r.stolen:.0%}'} |"
        )
        if metric:
            line += f" {r.downstream:.3f} |" if r.downstream is not None else " — |"
        lines.append(line)
    return lines


def goals(
    steps: tuple[Run, Run, Run, Run], timed: tuple[Run, Run], metric: str | None
) -> list[str]:
    """One line per goal with its figures and whether it is met. `steps`: transformers and
    ours, each at seed and seed + 1."""
    hf, hf_again, ours, ours_again = steps

    def loss(r: Run) -> float:
        return r.validation["mlm_loss"]

    difference = (loss(ours) + loss(ours_again) - loss(hf) - loss(hf_again)) / 2
    noise = (abs(loss(ours) - loss(ours_again)) + abs(loss(hf) - loss(hf_again))) / 2
    equal = abs(difference) <= NOISE_MULTIPLE * noise
    ratio = ours.tokens_per_s / hf.tokens_per_s
    timed_hf, timed_ours = timed
    lower = timed_ours.validation["mlm_loss"] < timed_hf.validation["mlm_loss"]
    line = (
        f"- better model at equal time (~{timed_hf.seconds:,.0f} s): val MLM loss ours "
        f"{timed_ours.validation['mlm_loss']:.3f} vs transformers "
        f"{timed_hf.validation['mlm_loss']:.3f}"
    )
    no_worse = True
    if metric and timed_ours.downstream is not None and timed_hf.downstream is not None:
        no_worse = timed_ours.downstream >= timed_hf.downstream
        line += f", {metric} {timed_ours.downstream:.3f} vs {timed_hf.downstream:.3f}"
    return [
        f"- loss per step equal within noise: val MLM loss ours - transformers at {hf.steps:,} "
        f"steps, means of seeds {hf.seed} and {hf_again.seed}, {difference:+.3f}; noise (the "
        f"seed-to-seed difference, mean of both) {noise:.3f}; goal |difference| <= "
        f"{NOISE_MULTIPLE:g} x noise: {verdict(equal)}",
        f"- tokens/s: ours {ratio:.2f} x transformers', goal >= {GOAL_TOKENS_RATIO:g}: "
        f"{verdict(ratio >= GOAL_TOKENS_RATIO)}",
        f"{line}: {verdict(lower and no_worse)}",
    ]


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# -- the run ---------------------------------------------------------------------------------------


def parse_args(pipeline: PipelineConfig) -> argparse.Namespace:
    """Options whose defaults are `pipeline`'s (the demo preset unless --config names a YAML)."""
    train, shard = pipeline.phases[0].pretrain, pipeline.phases[0].shard
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    option = parser.add_argument
    option("--config", type=Path, help="pipeline YAML (default: the demo preset)")
    option("--steps", type=int, help=f"steps at equal steps (default: {train.max_steps})")
    option("--preset", help=f"model preset (default: {train.preset})")
    option("--batch-size", type=int, help=f"default: {train.batch_size}")
    option("--lr", type=float, help=f"peak learning rate (default: {train.lr:g})")
    option("--seq-len", type=int, help=f"the shards' length (default: {shard.max_seq_len})")
    option("--seed", type=int, help=f"default: {train.seed}; the noise run takes seed + 1")
    option("--store", type=Path, help="artifact store folder (default: a temporary one)")
    option(
        "--task",
        help="downstream task, a `bertflow evaluate --task` spec (default: the "
        f"demo's SST-2 when it is beside the checkout, else {FALLBACK_TASK})",
    )
    option(
        "--finetune-seeds",
        type=int,
        help="fine-tuning runs per model, the median reported "
        "(default: the evaluate stage's, by the task's size)",
    )
    option(
        "--finetune-examples",
        type=int,
        help="fine-tune on a sample of this many (default: "
        f"{pipeline.evaluate.max_train_examples})",
    )
    return parser.parse_args()


def configure(args: argparse.Namespace, pipeline: PipelineConfig) -> tuple[TrainConfig, int, int]:
    """The first phase's training with the options given, and the steps and seed to run."""
    given = {"preset": args.preset, "batch_size": args.batch_size, "lr": args.lr}
    base = changed(pipeline.phases[0].pretrain, **{k: v for k, v in given.items() if v is not None})
    seed = base.seed if args.seed is None else args.seed
    return base, args.steps or base.max_steps, seed


def evaluation_config(args: argparse.Namespace, pipeline: PipelineConfig) -> EvaluateConfig:
    given = {"seeds": args.finetune_seeds, "max_train_examples": args.finetune_examples}
    return changed(pipeline.evaluate, **{k: v for k, v in given.items() if v is not None})


def task_spec(task: str | None, pipeline: PipelineConfig) -> TaskSpec:
    """--task, else the pipeline's first task (the demo's: SST-2 when it is beside the
    checkout), else the built-in one."""
    if task:
        return TaskSpec.parse(task)
    return pipeline.evaluate.tasks[0] if pipeline.evaluate.tasks else TaskSpec(path=FALLBACK_TASK)


def main() -> None:
    pipeline = demo()
    args = parse_args(pipeline)
    if args.config:
        pipeline = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="bertflow-quality-store-") as scratch:
        store = ArtifactStore(str(args.store or scratch))
        compare(store, args, pipeline)


@dataclass(frozen=True)
class Bench:
    """Where the contenders train and how their models are measured."""

    store: ArtifactStore
    shards_id: str
    evaluation: EvaluateConfig

    def run(self, contender: str, config: TrainConfig) -> Run:
        """Train one contender and measure its model on the validation split."""
        print(f"== {contender}: seed {config.seed}, {config.max_steps} steps", flush=True)
        trainer = train_hf if contender == ANCHOR else train_ours
        with Steal() as steal:
            result = trainer(self.store, self.shards_id, config)
        result.stolen = steal.share
        validate(result, self.store, self.shards_id, self.evaluation)
        return result

    def equal_time(self, base: TrainConfig, seed: int, a: Run, b: Run) -> tuple[Run, Run]:
        """The slower run, and the faster contender trained again for about its seconds."""
        fast, slow = (a, b) if a.seconds <= b.seconds else (b, a)
        steps = max(1, round(fast.steps * slow.seconds / fast.seconds))
        return slow, self.run(fast.contender, recipe(base, steps, seed))


def compare(store: ArtifactStore, args: argparse.Namespace, pipeline: PipelineConfig) -> None:
    """Build the data, train every run, fine-tune, print the table and the goals."""
    base, steps, seed = configure(args, pipeline)
    config, evaluation = recipe(base, steps, seed), evaluation_config(args, pipeline)
    shards_id = build_shards(store, pipeline, args.seq_len)
    layout = store.require(shards_id, kind="shards").layout
    if layout["objective"] == "none" or validation_dataset(store, shards_id, 1) is None:
        raise SystemExit(f"{shards_id}: needs an NSP or SOP objective and a validation split")
    length = evaluation.max_seq_len or min(DEFAULT_MAX_SEQ_LEN, config.max_position_embeddings)
    downstream = prepare_downstream(
        task_spec(args.task, pipeline), store, shards_id, evaluation, length
    )
    print(setup(shards_id, layout, config), flush=True)
    bench = Bench(store, shards_id, evaluation)
    again = recipe(base, steps, seed + 1)
    hf, ours = bench.run(ANCHOR, config), bench.run(OURS, config)
    hf_again, ours_again = bench.run(ANCHOR, again), bench.run(OURS, again)
    slow, fast_timed = bench.equal_time(base, seed, hf, ours)
    timed = (slow, fast_timed) if slow is hf else (fast_timed, slow)
    if downstream is not None:
        for r in (hf, ours, fast_timed):
            print(
                f"== fine-tuning on {downstream.name} ({len(downstream.prepared.seeds)} seeds):"
                f" {r.contender}, {r.steps} steps",
                flush=True,
            )
            r.downstream = downstream_score(r.model, downstream)
    rows = [(f"{steps:,} steps", r) for r in (hf, hf_again, ours, ours_again)]
    rows += [(f"~{slow.seconds:,.0f} s", r) for r in timed]
    metric = f"{downstream.name} {downstream.metric}" if downstream else None
    print("\n" + "\n".join(table(rows, hf, metric)))
    print("\ngoals:\n" + "\n".join(goals((hf, hf_again, ours, ours_again), timed, metric)))


def setup(shards_id: str, layout: dict[str, Any], config: TrainConfig) -> str:
    """One line: the data, the recipe, the device and what both share."""
    return (
        f"{shards_id} (length {layout['max_seq_len']}, vocabulary {layout['vocab_size']:,}); "
        f"{config.preset}, batch {config.batch_size}, lr {config.lr:g}, warm-up "
        f"{config.resolved_warmup()} of {config.max_steps} steps; "
        f"{training_device(config)}, {resolve_precision(config)}, "
        f"{torch.get_num_threads()} threads, {config.num_workers} loader worker(s); torch "
        f"{torch.__version__}, transformers {transformers.__version__}\n"
    )


if __name__ == "__main__":
    main()
