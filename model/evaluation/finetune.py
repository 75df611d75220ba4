"""Fine-tuning the pretrained encoder on a labelled task: sentence (pair) classification or
regression, with the same model code as pretraining and a plain PyTorch loop.

A downstream task is small (thousands of examples, a few epochs): a Lightning trainer would cost
more than the steps themselves on a CPU. Given a dev split, a run keeps the epoch that scores best
on it and predicts the evaluation split only with that epoch's weights: the evaluation split
chooses nothing. Everything random (the classifier's initialisation, dropout, the example order)
comes from the run's seed inside a forked generator state, so a run does not depend on what ran
before it in the process.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from bertflow.model.bert import BertConfig, BertForSequenceClassification, Pooling
from bertflow.model.training.module import OptimConfig, adamw, lr_factor
from bertflow.pipeline.core.literals import PAD_ID, Problem

PAD_TO_MULTIPLE = 8
LOSS_EVERY = 10  # optimizer steps per point of the training-loss curve


@dataclass(frozen=True)
class FinetuneConfig:
    lr: float = 1e-4
    epochs: int = 3
    batch_size: int = 32
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    eval_batch_size: int = 128
    pooling: Pooling = "cls"


@dataclass(frozen=True)
class Encoded:
    """A task split as token ids: one array per example, plus how many were cut to fit."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    labels: np.ndarray
    truncated: int

    def __len__(self) -> int:
        return len(self.ids)


def encode(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    labels: np.ndarray,
    max_seq_len: int,
) -> Encoded:
    """`[CLS] a [SEP] (b [SEP])` ids, cut to `max_seq_len` from the longer side (the tokenizer's
    longest-first rule); a cut example is counted, not refused."""
    tokenizer = Tokenizer.from_str(tokenizer.to_str())  # truncation settings stay on this copy
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_seq_len, strategy="longest_first")
    inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
    encodings = tokenizer.encode_batch(inputs)
    return Encoded(
        ids=[np.asarray(e.ids, dtype=np.int64) for e in encodings],
        type_ids=[np.asarray(e.type_ids, dtype=np.int64) for e in encodings],
        labels=labels,
        truncated=sum(1 for e in encodings if e.overflowing),
    )


def collate(data: Encoded, pick: np.ndarray, problem: Problem) -> dict[str, torch.Tensor]:
    """Pad the picked examples to the longest, rounded up to a multiple of 8."""
    longest = max(len(data.ids[i]) for i in pick)
    width = -(-longest // PAD_TO_MULTIPLE) * PAD_TO_MULTIPLE
    ids = np.full((len(pick), width), PAD_ID, dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, i in enumerate(pick):
        n = len(data.ids[i])
        ids[row, :n], types[row, :n], mask[row, :n] = data.ids[i], data.type_ids[i], 1
    labels = data.labels[pick]
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(
            labels.astype(np.float32 if problem == "regression" else np.int64)
        ),
    }


@dataclass
class FinetuneRun:
    """What one fine-tuning run leaves: predictions on the evaluation split from the epoch it kept,
    and its curves (training loss every LOSS_EVERY steps, the selection score per epoch)."""

    predictions: np.ndarray
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    epoch_scores: list[float] = field(default_factory=list)
    """Per epoch: the dev score when a dev split chooses the epoch, else the evaluation score."""
    selected_epoch: int = 0
    """The epoch (1-based) whose predictions are kept: the best on dev, else the last."""
    steps: int = 0
    seconds: float = 0.0


def classifier(
    architecture: BertConfig,
    num_labels: int,
    encoder: dict[str, torch.Tensor] | None,
    pooling: Pooling = "cls",
) -> BertForSequenceClassification:
    """A classifier whose encoder starts from `encoder` (a BertModel state dict), or randomly."""
    model = BertForSequenceClassification(architecture, num_labels, pooling)
    if encoder is not None:
        model.bert.load_state_dict(encoder)
    return model


def finetune(
    architecture: BertConfig,
    encoder: dict[str, torch.Tensor] | None,
    train: Encoded,
    evaluation: Encoded,
    *,
    problem: Problem,
    num_labels: int,
    config: FinetuneConfig,
    seed: int,
    device: torch.device,
    score: Callable[[np.ndarray], float],
    on_step: Callable[[], None] = lambda: None,
    dev: Encoded | None = None,
    dev_score: Callable[[np.ndarray], float] | None = None,
    higher_is_better: bool = True,
) -> FinetuneRun:
    """Train a classifier on `train` for `config.epochs`. Linear warm-up and decay, AdamW without
    decay on biases and LayerNorm, gradient clipping at 1, bf16 autocast on GPUs.

    With a `dev` split, each epoch is scored on it (`dev_score`, best is highest unless
    `higher_is_better` is False), the best epoch's weights are kept, and only they predict
    `evaluation`: the evaluation split chooses nothing. Without one, `evaluation` is predicted
    after every epoch (`score` gives the curve) and the last epoch is kept."""
    if dev is not None and dev_score is None:
        raise ValueError("finetune: a dev split needs dev_score to choose the epoch by")
    started = time.monotonic()
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optim = OptimConfig(
        lr=config.lr,
        warmup_steps=round(config.warmup_fraction * total),
        max_steps=total,
        weight_decay=config.weight_decay,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(seed)
        model = classifier(architecture, num_labels, encoder, config.pooling).to(device)
        optimizer = adamw(model, optim, device)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, optim))
        order = np.random.default_rng(seed)
        run = FinetuneRun(predictions=np.empty(0))
        window: list[float] = []
        kept: dict[str, torch.Tensor] = {}
        for epoch in range(1, config.epochs + 1):
            model.train()
            for pick in _batches(order.permutation(len(train)), config.batch_size):
                batch = _to(collate(train, pick, problem), device)
                with _autocast(device):
                    logits = model(
                        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
                    )
                loss = task_loss(logits, batch["labels"], problem)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                run.steps += 1
                window.append(float(loss.detach()))
                if run.steps % LOSS_EVERY == 0 or run.steps == total:
                    run.loss_curve.append((run.steps, float(np.mean(window))))
                    window = []
                on_step()
            if dev is None or dev_score is None:  # no selection: the last epoch is kept
                run.predictions = predict(
                    model, evaluation, problem, device, config.eval_batch_size
                )
                run.epoch_scores.append(score(run.predictions))
                run.selected_epoch = epoch
            else:
                dev_predictions = predict(model, dev, problem, device, config.eval_batch_size)
                run.epoch_scores.append(dev_score(dev_predictions))
                if best_epoch(run.epoch_scores, higher_is_better) == epoch:
                    run.selected_epoch = epoch
                    kept = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if kept:  # the best epoch on dev, and only it, predicts the evaluation split
            model.load_state_dict(kept)
            run.predictions = predict(model, evaluation, problem, device, config.eval_batch_size)
    run.seconds = time.monotonic() - started
    return run


def best_epoch(scores: Sequence[float], higher_is_better: bool = True) -> int:
    """The 1-based epoch of the best score; the earliest of equal ones."""
    values = np.asarray(scores, dtype=np.float64)
    return 1 + int(np.argmax(values) if higher_is_better else np.argmin(values))


def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem: Problem) -> torch.Tensor:
    if problem == "regression":
        return F.mse_loss(logits.float().squeeze(-1), labels)
    return F.cross_entropy(logits.float(), labels)


@torch.no_grad()
def predict(
    model: BertForSequenceClassification,
    data: Encoded,
    problem: Problem,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Class ids (int64) or regression outputs (float64), in the split's order. Examples are
    batched by length so little padding is computed."""
    model.eval()
    by_length = np.argsort([len(ids) for ids in data.ids], kind="stable")
    out = np.empty(len(data), dtype=np.float64 if problem == "regression" else np.int64)
    for pick in _batches(by_length, batch_size):
        batch = _to(collate(data, pick, problem), device)
        with _autocast(device):
            logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        logits = logits.float()
        values = logits.squeeze(-1) if problem == "regression" else logits.argmax(-1)
        out[pick] = values.cpu().numpy()
    return out


def encoder_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `bert.*` part of a BertForPreTraining state dict, as a BertModel state dict."""
    return {k.removeprefix("bert."): v for k, v in model_state.items() if k.startswith("bert.")}


def _batches(order: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
