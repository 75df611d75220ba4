"""TF-IDF + linear model: the baseline every fine-tuned number is reported beside.

Bag-of-words n-grams with logistic or ridge regression are a strong reference that needs no
pretraining and trains in seconds on a CPU (about 0.80 accuracy on SST-2). A pretrained encoder
that does not clear it has learnt nothing the words alone do not show, so each fine-tuning
table puts this number next to the model's.

Labels in, predictions out: metrics are computed by the caller (`evaluation.metrics`), the
same way for the baseline as for the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge

from bertflow.pipeline.core.literals import Problem


@dataclass(frozen=True)
class BaselineResult:
    """What the baseline predicts for the evaluation texts, and how long it took."""

    predictions: np.ndarray
    """(N,) int64 class ids for classification, float64 scores for regression."""
    seconds: float
    """Wall time to fit the vectorizer and model and predict, for the cost column of a report."""


def _check_inputs(
    train_texts: Sequence[str],
    train_pairs: Sequence[str] | None,
    train_labels: np.ndarray,
    eval_texts: Sequence[str],
    eval_pairs: Sequence[str] | None,
    problem: str,
) -> None:
    """Reject mismatched inputs up front: sklearn's own errors would not name the argument."""
    if problem not in ("classification", "regression"):
        raise ValueError(f"problem must be 'classification' or 'regression', got {problem!r}")
    if not train_texts or not eval_texts:
        raise ValueError("train_texts and eval_texts must both be non-empty")
    if len(train_labels) != len(train_texts):
        raise ValueError(
            f"train_labels has {len(train_labels)} entries for {len(train_texts)} train_texts"
        )
    if (train_pairs is None) != (eval_pairs is None):
        raise ValueError("train_pairs and eval_pairs must both be given (a pair task) or neither")
    for split, pairs, texts in (
        ("train", train_pairs, train_texts),
        ("eval", eval_pairs, eval_texts),
    ):
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{split}_pairs has {len(pairs)} rows for {len(texts)} {split}_texts")


def _features(
    vectorizer: TfidfVectorizer, texts: Sequence[str], pairs: Sequence[str] | None
) -> sparse.csr_matrix:
    """(N, F) for single sentences; (N, 3F + 1) [a, b, a*b, cos(a, b)] for pairs, so overlap
    is a feature."""
    a = vectorizer.transform(texts)
    if pairs is None:
        return a
    b = vectorizer.transform(pairs)
    # a*b is non-zero only on n-grams both sentences share: paraphrase and entailment signal
    # that a linear model on [a, b] alone cannot form. Each of its columns is tiny and seen
    # rarely, so on small tasks the regulariser keeps them near zero; their sum, the cosine of
    # the two (l2-normalised) rows, is one dense column that carries the overlap on any size.
    shared = a.multiply(b)
    cosine = sparse.csr_matrix(np.asarray(shared.sum(axis=1)))
    return sparse.hstack([a, b, shared, cosine], format="csr")


def _model(problem: Problem, seed: int) -> LogisticRegression | Ridge:
    """The linear model, hyperparameters fixed: a reference to beat, not a rival to tune."""
    if problem == "classification":
        return LogisticRegression(max_iter=1000, C=1.0, random_state=seed)
    return Ridge(alpha=1.0, random_state=seed)


def tfidf_baseline(
    train_texts: Sequence[str],
    train_pairs: Sequence[str] | None,
    train_labels: np.ndarray,
    eval_texts: Sequence[str],
    eval_pairs: Sequence[str] | None,
    problem: Problem,
    seed: int = 0,
) -> BaselineResult:
    """Fit TF-IDF (word 1-2 grams, sublinear tf) and a linear model on train; predict eval.

    The vocabulary and idf come from the training sentences only (both sides of a pair), so
    nothing about the evaluation set leaks into the features. Deterministic for a given seed.
    """
    _check_inputs(train_texts, train_pairs, train_labels, eval_texts, eval_pairs, problem)
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True)
    vectorizer.fit([*train_texts, *(train_pairs or [])])
    model = _model(problem, seed)
    model.fit(_features(vectorizer, train_texts, train_pairs), np.asarray(train_labels))
    predicted = model.predict(_features(vectorizer, eval_texts, eval_pairs))
    dtype = np.int64 if problem == "classification" else np.float64
    return BaselineResult(predictions=predicted.astype(dtype), seconds=time.perf_counter() - start)
