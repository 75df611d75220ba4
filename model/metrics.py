"""Evaluation metrics for fine-tuning (GLUE's set), in plain numpy, and the summary over seeds.

Written by hand rather than taken from scikit-learn or scipy so the evaluation path has no
heavy dependency and every number can be checked against arithmetic done on paper (the tests do,
and cross-check scikit-learn/scipy on random data).

Every metric is `fn(predictions, labels) -> float`. Classification metrics take integer class
ids; regression metrics take floats. Cases where a metric is undefined (a zero denominator)
return 0.0 rather than NaN, as scikit-learn does for MCC: a NaN in one seed would otherwise
poison the median over seeds and every table built from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def _pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as flat arrays, after rejecting what would give a silently wrong number."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels differ in shape: {predictions.shape} vs {labels.shape}"
        )
    if predictions.size == 0:
        raise ValueError("predictions and labels are empty: no metric is defined on no examples")
    return predictions.ravel(), labels.ravel()


def _class_ids(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as int64 class ids; fractional values (probabilities, logits) are rejected."""
    predictions, labels = _pair(predictions, labels)
    for name, values in (("predictions", predictions), ("labels", labels)):
        if not np.array_equal(values, np.round(values)):
            raise ValueError(f"{name} must be integer class ids, got fractional values")
    return predictions.astype(np.int64), labels.astype(np.int64)


def _floats(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as float64, so sums of squares of large ids or scores cannot overflow."""
    predictions, labels = _pair(predictions, labels)
    return predictions.astype(np.float64), labels.astype(np.float64)


def _f1_of_class(predictions: np.ndarray, labels: np.ndarray, positive: int) -> float:
    """F1 = 2TP / (2TP + FP + FN) for one class; 0.0 when that class is in neither side."""
    predicted, actual = predictions == positive, labels == positive
    tp = int(np.sum(predicted & actual))
    denominator = 2 * tp + int(np.sum(predicted & ~actual)) + int(np.sum(~predicted & actual))
    return 2 * tp / denominator if denominator else 0.0


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose predicted class id equals the label."""
    predictions, labels = _class_ids(predictions, labels)
    return float(np.mean(predictions == labels))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 with class 1 positive (GLUE's MRPC and QQP).

    0.0 when no example is predicted positive and none is labelled positive (scikit-learn's
    `zero_division=0`), since precision and recall are both undefined then.
    """
    predictions, labels = _class_ids(predictions, labels)
    return float(_f1_of_class(predictions, labels, positive=1))


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions.

    A class only ever predicted (never labelled) counts with F1 = 0, so spraying a spurious
    class is penalised, as in scikit-learn's `f1_score(average="macro")`.
    """
    predictions, labels = _class_ids(predictions, labels)
    classes = np.union1d(predictions, labels)
    return float(np.mean([_f1_of_class(predictions, labels, int(c)) for c in classes]))


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, the multi-class (Gorodkin) form GLUE reports for CoLA.

    With the confusion matrix C, c = trace(C) correct, s examples, t_k true and p_k predicted
    counts per class: MCC = (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t)). For two classes this
    is the familiar (TP*TN - FP*FN) / sqrt(...). A zero denominator (one side constant) gives
    0.0, scikit-learn's convention, rather than NaN.
    """
    predictions, labels = _class_ids(predictions, labels)
    classes, ids = np.unique(np.concatenate([predictions, labels]), return_inverse=True)
    predicted, actual = ids[: predictions.size], ids[predictions.size :]
    t = np.bincount(actual, minlength=classes.size).astype(np.float64)  # (K,) per true class
    p = np.bincount(predicted, minlength=classes.size).astype(np.float64)  # (K,) per predicted
    s, c = float(predictions.size), float(np.sum(predicted == actual))
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation (GLUE's STS-B); 0.0 when either side is constant (undefined)."""
    predictions, labels = _floats(predictions, labels)
    return _correlation(predictions, labels)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two float arrays, clipped to [-1, 1] against rounding."""
    # ptp, not std: the mean of a constant array can round, leaving tiny non-zero deviations.
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx @ dy) / np.sqrt((dx @ dx) * (dy @ dy))
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks where tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(values.size)
    ordered = values[order]
    run_starts = np.r_[True, ordered[1:] != ordered[:-1]]  # (n,) a new value begins here
    bounds = np.r_[np.flatnonzero(run_starts), values.size]  # (runs + 1,) 0-based run edges
    group = np.cumsum(run_starts)[position]  # (n,) 1-based run of each value, in input order
    # A run spanning 0-based positions [lo, hi) holds ranks lo+1 .. hi, whose mean is (lo+hi+1)/2.
    return 0.5 * (bounds[group - 1] + bounds[group] + 1)


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman correlation: Pearson of average ranks (ties share the mean rank, as scipy's).

    0.0 when either side is constant (every rank tied), where it is undefined.
    """
    predictions, labels = _floats(predictions, labels)
    return _correlation(_average_ranks(predictions), _average_ranks(labels))


def mse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error, the regression loss (lower is better)."""
    predictions, labels = _floats(predictions, labels)
    return float(np.mean((predictions - labels) ** 2))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
    "mse": mse,
}
HIGHER_IS_BETTER: dict[str, bool] = {name: name != "mse" for name in METRICS}
"""Which way each metric improves, so model selection can compare any of them."""


def compute_metrics(
    names: Sequence[str], predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The named metrics of one evaluation, checked up front so a typo fails before any work."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    _pair(predictions, labels)
    return {name: METRICS[name](predictions, labels) for name in names}


@dataclass(frozen=True)
class RunSummary:
    """One metric over several fine-tuning seeds: the median to report, and the mean, standard
    deviation and range beside it."""

    median: float
    mean: float
    min: float
    max: float
    std: float
    """Population standard deviation (ddof=0): the seeds run are all the runs there are."""
    runs: tuple[float, ...]
    """Each seed's value, in the order given."""

    def as_dict(self) -> dict[str, float | list[float]]:
        """Plain floats and a list, ready for JSON."""
        return {
            "median": self.median,
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "std": self.std,
            "runs": list(self.runs),
        }


def summarize_runs(values: Sequence[float]) -> RunSummary:
    """Median over seeds and the spread: fine-tuning small tasks varies a lot from seed to seed."""
    runs = np.asarray(values, dtype=np.float64)
    if runs.ndim != 1 or runs.size == 0:
        raise ValueError(f"summarize_runs needs a non-empty flat list of values, got {values!r}")
    return RunSummary(
        median=float(np.median(runs)),
        mean=float(runs.mean()),
        min=float(runs.min()),
        max=float(runs.max()),
        std=float(runs.std(ddof=0)),
        runs=tuple(float(v) for v in runs),
    )
