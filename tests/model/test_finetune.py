"""Model selection in fine-tuning: a run keeps the epoch that scores best on its dev split, reports
that epoch's predictions on the evaluation split, and never lets the evaluation labels choose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertflow.model.bert_config import tiny
from bertflow.model.evaluation.finetune import (
    Encoded,
    FinetuneConfig,
    FinetuneRun,
    best_epoch,
    finetune,
)
from bertflow.model.evaluation.metrics import accuracy

ARCHITECTURE = tiny(vocab_size=64, max_position_embeddings=32, pad_vocab_multiple=1)
CONFIG = FinetuneConfig(lr=1e-3, epochs=4, batch_size=8, warmup_fraction=0.1)
CUES = (10, 11)  # the token that decides the label: 10 -> class 0, 11 -> class 1


def cue_split(n: int, seed: int) -> Encoded:
    """`[CLS] words.. [SEP]` with three of nine words the cue: the label is which cue it is."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    ids = []
    for label in labels:
        words = rng.integers(12, 64, 9)
        words[rng.choice(9, 3, replace=False)] = CUES[label]
        ids.append(np.concatenate([[2], words, [3]]).astype(np.int64))
    return Encoded(ids, [np.zeros_like(i) for i in ids], labels.astype(np.int64), truncated=0)


def relabel(split: Encoded, labels: np.ndarray) -> Encoded:
    return Encoded(split.ids, split.type_ids, labels, split.truncated)


def run(train: Encoded, evaluation: Encoded, dev: Encoded | None = None, **kw) -> FinetuneRun:
    return finetune(
        ARCHITECTURE,
        None,
        train,
        evaluation,
        problem="classification",
        num_labels=2,
        config=CONFIG,
        seed=7,
        device=torch.device("cpu"),
        score=lambda p: accuracy(p, evaluation.labels),
        dev=dev,
        dev_score=(lambda p: accuracy(p, dev.labels)) if dev is not None else None,
        **kw,
    )


@pytest.fixture(scope="module")
def splits() -> tuple[Encoded, Encoded, Encoded]:
    """(train, evaluation, misleading dev): the dev labels are flipped, so the better a model
    learns the task, the worse it scores on dev, and the last epoch is not the dev's best."""
    train, evaluation, dev = cue_split(64, 0), cue_split(48, 1), cue_split(32, 2)
    return train, evaluation, relabel(dev, 1 - dev.labels)


@pytest.fixture(scope="module")
def every_epoch(splits) -> tuple[FinetuneRun, list[np.ndarray]]:
    """The same run without a dev split, its evaluation predictions captured after each epoch."""
    train, evaluation, _ = splits
    seen: list[np.ndarray] = []

    def score(predictions: np.ndarray) -> float:
        seen.append(predictions.copy())
        return accuracy(predictions, evaluation.labels)

    plain = finetune(
        ARCHITECTURE,
        None,
        train,
        evaluation,
        problem="classification",
        num_labels=2,
        config=CONFIG,
        seed=7,
        device=torch.device("cpu"),
        score=score,
    )
    return plain, seen


@pytest.fixture(scope="module")
def selected(splits) -> FinetuneRun:
    train, evaluation, dev = splits
    return run(train, evaluation, dev)


def test_without_a_dev_split_the_last_epoch_is_kept(splits, every_epoch):
    _, evaluation, _ = splits
    plain, seen = every_epoch
    assert plain.selected_epoch == CONFIG.epochs == len(plain.epoch_scores) == len(seen)
    np.testing.assert_array_equal(plain.predictions, seen[-1])
    assert plain.epoch_scores[-1] == accuracy(plain.predictions, evaluation.labels)
    assert plain.epoch_scores[-1] > 0.8  # the cue is learnt: the misleading dev will disagree


def test_the_run_reports_the_epoch_best_on_dev(splits, every_epoch, selected):
    """Selection follows the dev curve, and the reported predictions are those the kept epoch's
    weights make (the same as the run without dev made after that epoch)."""
    _, evaluation, _ = splits
    plain, seen = every_epoch
    assert len(selected.epoch_scores) == CONFIG.epochs
    assert selected.selected_epoch == best_epoch(selected.epoch_scores)
    assert selected.selected_epoch < CONFIG.epochs  # the constructed case: last is not best
    np.testing.assert_array_equal(selected.predictions, seen[selected.selected_epoch - 1])
    kept_score = accuracy(selected.predictions, evaluation.labels)
    assert kept_score == plain.epoch_scores[selected.selected_epoch - 1]
    assert kept_score < plain.epoch_scores[-1]  # what the misleading dev split cost


def test_evaluation_labels_never_influence_selection(splits, selected):
    """Permuted evaluation labels: the same dev curve, the same epoch, the same predictions."""
    train, evaluation, dev = splits
    permuted = relabel(evaluation, np.random.default_rng(3).permutation(evaluation.labels))
    assert not np.array_equal(permuted.labels, evaluation.labels)
    again = run(train, permuted, dev)
    assert again.selected_epoch == selected.selected_epoch
    assert again.epoch_scores == selected.epoch_scores
    np.testing.assert_array_equal(again.predictions, selected.predictions)


def test_a_lower_is_better_score_keeps_the_lowest_epoch():
    assert best_epoch([0.3, 0.1, 0.2], higher_is_better=False) == 2
    assert best_epoch([0.5, 0.7, 0.7]) == 2  # the earliest of equal scores


def test_a_dev_split_without_a_score_is_refused(splits):
    train, evaluation, dev = splits
    with pytest.raises(ValueError, match="dev_score"):
        finetune(
            ARCHITECTURE,
            None,
            train,
            evaluation,
            problem="classification",
            num_labels=2,
            config=CONFIG,
            seed=7,
            device=torch.device("cpu"),
            score=lambda p: 0.0,
            dev=dev,
        )


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_either_pooling_learns_the_cue(splits, pooling):
    train, evaluation, _ = splits
    config = FinetuneConfig(lr=1e-3, epochs=4, batch_size=8, warmup_fraction=0.1, pooling=pooling)
    learned = finetune(
        ARCHITECTURE,
        None,
        train,
        evaluation,
        problem="classification",
        num_labels=2,
        config=config,
        seed=7,
        device=torch.device("cpu"),
        score=lambda p: accuracy(p, evaluation.labels),
    )
    assert learned.epoch_scores[-1] >= 0.9, learned.epoch_scores
