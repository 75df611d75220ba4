"""The TF-IDF baseline learns what bag-of-words can learn, deterministically, and scores about
0.80 on SST-2 as published."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bertflow.model.evaluation.baselines import tfidf_baseline
from bertflow.model.evaluation.metrics import accuracy, pearson

SST2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sst2"
NOISE = [f"w{i}" for i in range(40)]


def _noise(rng: np.random.Generator, n: int) -> list[str]:
    return list(rng.choice(NOISE, size=n))


def sentiment_task(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Noise sentences with one sentiment word: "good"/"great" is class 1, "bad"/"awful" 0."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = []
    for label in labels:
        words = _noise(rng, int(rng.integers(5, 10)))
        cue = rng.choice(["good", "great"] if label else ["bad", "awful"])
        words.insert(int(rng.integers(0, len(words) + 1)), str(cue))
        texts.append(" ".join(words))
    return texts, labels


def counting_task(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Noise sentences holding 0-4 copies of "very"; the label is that count."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, n)
    texts = []
    for count in counts:
        words = _noise(rng, 6) + ["very"] * int(count)
        texts.append(" ".join(rng.permutation(words)))
    return texts, counts.astype(np.float64)


def repeat_task(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Pairs where the second sentence repeats the first (class 1) or is unrelated (class 0).

    Both sides come from the same distribution, so only the overlap features a*b can tell the
    classes apart. Those are small (a product of two unit-norm vectors) and one per n-gram, so
    at C=1 the model needs many examples of few words: 3-word sentences over 10 words.
    """
    rng = np.random.default_rng(seed)
    vocabulary = NOISE[:10]
    labels = rng.integers(0, 2, n)
    firsts = [" ".join(rng.choice(vocabulary, size=3)) for _ in labels]
    seconds = [
        a if label else " ".join(rng.choice(vocabulary, size=3))
        for a, label in zip(firsts, labels, strict=True)
    ]
    return firsts, seconds, labels


def test_learns_sentiment_words() -> None:
    train_texts, train_labels = sentiment_task(200, seed=1)
    eval_texts, eval_labels = sentiment_task(50, seed=2)
    result = tfidf_baseline(train_texts, None, train_labels, eval_texts, None, "classification")
    assert result.predictions.dtype == np.int64
    assert result.predictions.shape == (50,)
    assert accuracy(result.predictions, eval_labels) > 0.9
    assert result.seconds > 0


def test_regresses_a_word_count() -> None:
    train_texts, train_labels = counting_task(200, seed=1)
    eval_texts, eval_labels = counting_task(50, seed=2)
    result = tfidf_baseline(train_texts, None, train_labels, eval_texts, None, "regression")
    assert result.predictions.dtype == np.float64
    assert pearson(result.predictions, eval_labels) > 0.8


def test_sentence_pairs_see_overlap() -> None:
    # With 200 training pairs the overlap weights stay near zero (about 0.55); 2000 give 0.98.
    train_a, train_b, train_labels = repeat_task(2000, seed=1)
    eval_a, eval_b, eval_labels = repeat_task(200, seed=2)
    result = tfidf_baseline(train_a, train_b, train_labels, eval_a, eval_b, "classification")
    assert accuracy(result.predictions, eval_labels) > 0.8


def test_deterministic() -> None:
    train_a, train_b, train_labels = repeat_task(500, seed=1)
    eval_a, eval_b, _ = repeat_task(100, seed=2)
    runs = [
        tfidf_baseline(train_a, train_b, train_labels, eval_a, eval_b, "classification", seed=3)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].predictions, runs[1].predictions)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_labels": np.array([0, 1])}, "train_labels"),
        ({"train_pairs": ["x y", "y z", "z x"]}, "both"),
        ({"problem": "ranking"}, "problem"),
        ({"eval_texts": []}, "non-empty"),
    ],
)
def test_rejects_bad_inputs(kwargs: dict, message: str) -> None:
    inputs = {
        "train_texts": ["good film", "bad film", "great plot"],
        "train_pairs": None,
        "train_labels": np.array([1, 0, 1]),
        "eval_texts": ["good plot"],
        "eval_pairs": None,
        "problem": "classification",
    }
    with pytest.raises(ValueError, match=message):
        tfidf_baseline(**{**inputs, **kwargs})


def _read_sst2(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["sentence", "label"]
    return [row[0] for row in rows[1:]], np.array([int(row[1]) for row in rows[1:]])


@pytest.mark.skipif(not (SST2 / "train.tsv").exists(), reason="SST-2 data not present")
def test_sst2_dev_accuracy_as_published() -> None:
    """TF-IDF + logistic regression scores about 0.80 on SST-2 dev."""
    train_texts, train_labels = _read_sst2(SST2 / "train.tsv")
    dev_texts, dev_labels = _read_sst2(SST2 / "dev.tsv")
    result = tfidf_baseline(train_texts, None, train_labels, dev_texts, None, "classification")
    assert 0.72 < accuracy(result.predictions, dev_labels) < 0.90
