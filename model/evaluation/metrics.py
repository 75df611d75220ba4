"""Evaluation metrics for fine-tuning (GLUE's set), from scikit-learn and scipy, and the summary
over seeds.

Every metric is `fn(predictions, labels) -> float`. Classification metrics take integer class
ids; regression metrics take floats. Inputs are checked first (same shape, not empty, class ids
whole), since the libraries' own errors would not say which side is wrong. Cases where a metric is
undefined (a zero denominator, a constant side) give 0.0 rather than NaN, as scikit-learn does
for MCC: a NaN in one seed would otherwise poison the median over seeds and every table built
from it.

scikit-learn and scipy load when a metric is first computed, not when this module is imported:
commands that only read evaluations (`bertflow evaluate show`, `compare`) need which way each
metric improves, and must stay quick to start.
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


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose predicted class id equals the label."""
    from sklearn import metrics as sk

    predictions, labels = _class_ids(predictions, labels)
    return float(sk.accuracy_score(labels, predictions))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 with class 1 positive (GLUE's MRPC and QQP); 0.0 when no example is predicted
    or labelled positive, since precision and recall are both undefined then."""
    from sklearn import metrics as sk

    predictions, labels = _class_ids(predictions, labels)
    return float(sk.f1_score(labels, predictions, labels=[1], average="macro", zero_division=0))


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions: a class
    only ever predicted (never labelled) counts with F1 = 0, so spraying a spurious class costs."""
    from sklearn import metrics as sk

    predictions, labels = _class_ids(predictions, labels)
    return float(sk.f1_score(labels, predictions, average="macro", zero_division=0))


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, the multi-class (Gorodkin) form GLUE reports for CoLA; 0.0 when one
    side is constant."""
    from sklearn import metrics as sk

    predictions, labels = _class_ids(predictions, labels)
    return float(sk.matthews_corrcoef(labels, predictions))


def _constant(*sides: np.ndarray) -> bool:
    # ptp, not std: the mean of a constant array can round, leaving tiny non-zero deviations.
    return any(np.ptp(side) == 0 for side in sides)


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation (GLUE's STS-B); 0.0 when either side is constant (undefined)."""
    from scipy import stats

    predictions, labels = _floats(predictions, labels)
    if _constant(predictions, labels):
        return 0.0
    return float(np.clip(stats.pearsonr(predictions, labels).statistic, -1.0, 1.0))


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman correlation (ties share the mean rank); 0.0 when either side is constant."""
    from scipy import stats

    predictions, labels = _floats(predictions, labels)
    if _constant(predictions, labels):
        return 0.0
    return float(np.clip(stats.spearmanr(predictions, labels).statistic, -1.0, 1.0))


def mse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error, the regression loss (lower is better)."""
    from sklearn import metrics as sk

    predictions, labels = _floats(predictions, labels)
    return float(sk.mean_squared_error(labels, predictions))


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
