"""Metrics match arithmetic done by hand (whatever library computes them), and return 0.0 rather
than NaN where undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertflow.model.evaluation.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    RunSummary,
    accuracy,
    compute_metrics,
    f1,
    macro_f1,
    matthews_corrcoef,
    mse,
    pearson,
    spearman,
    summarize_runs,
)

# Binary example: TP=2 (0, 1), FN=1 (2), FP=1 (3), TN=4 (4..7).
BINARY_LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0])
BINARY_PREDICTIONS = np.array([1, 1, 0, 1, 0, 0, 0, 0])


def test_accuracy_by_hand() -> None:
    # 6 of 8 correct.
    assert accuracy(BINARY_PREDICTIONS, BINARY_LABELS) == pytest.approx(0.75)


def test_f1_by_hand() -> None:
    # F1 = 2TP / (2TP + FP + FN) = 4 / (4 + 1 + 1) = 0.6667
    assert f1(BINARY_PREDICTIONS, BINARY_LABELS) == pytest.approx(4 / 6)


def test_macro_f1_by_hand() -> None:
    # Class 1: 4/6. Class 0: TP=4, FP=1, FN=1 -> 8/10 = 0.8. Mean = (0.6667 + 0.8) / 2 = 0.7333
    assert macro_f1(BINARY_PREDICTIONS, BINARY_LABELS) == pytest.approx((4 / 6 + 0.8) / 2)


def test_macro_f1_counts_a_class_only_predicted() -> None:
    # Class 0: TP=1 FN=1 -> 2/3; class 1: TP=2 -> 1; class 2 (only predicted): FP=1 -> 0.
    # Mean = (2/3 + 1 + 0) / 3 = 0.5556
    assert macro_f1(np.array([0, 2, 1, 1]), np.array([0, 0, 1, 1])) == pytest.approx(5 / 9)


def test_binary_mcc_by_hand() -> None:
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (8 - 1) / sqrt(3*3*5*5) = 7/15
    assert matthews_corrcoef(BINARY_PREDICTIONS, BINARY_LABELS) == pytest.approx(7 / 15)


def test_multiclass_mcc_by_hand() -> None:
    # Correct c=4 of s=6; true counts t=[2,2,2], predicted p=[2,3,1]; t.p = 4+6+2 = 12.
    # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 12) / sqrt((36-14)(36-12)) = 12/sqrt(528)
    predictions, labels = np.array([0, 1, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 2, 2])
    assert matthews_corrcoef(predictions, labels) == pytest.approx(12 / math.sqrt(528))


def test_mcc_ignores_how_classes_are_numbered() -> None:
    """Only the confusion matrix matters, not the ids: relabelling both sides changes nothing."""
    predictions, labels = np.array([0, 1, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 2, 2])
    relabel = np.array([7, 3, 42])
    assert matthews_corrcoef(relabel[predictions], relabel[labels]) == pytest.approx(
        matthews_corrcoef(predictions, labels)
    )


def test_pearson_by_hand() -> None:
    # dx = [-1.5, -0.5, 0.5, 1.5], dy = [-3, -1, 0, 4]; sum dx*dy = 11, sum dx^2 = 5, sum dy^2 = 26
    # r = 11 / sqrt(5 * 26) = 0.9648
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 5.0, 9.0])
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(130))


def test_spearman_with_ties_by_hand() -> None:
    # Predictions [1, 2, 2, 3] rank as [1, 2.5, 2.5, 4]; labels [1, 3, 2, 4] as [1, 3, 2, 4].
    # Deviations from the mean rank 2.5: [-1.5, 0, 0, 1.5] and [-1.5, 0.5, -0.5, 1.5];
    # sum of products 4.5, sums of squares 4.5 and 5 -> rho = 4.5 / sqrt(22.5) = 3 / sqrt(10)
    predictions, labels = np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])
    assert spearman(predictions, labels) == pytest.approx(3 / math.sqrt(10))


def test_spearman_sees_only_order() -> None:
    x = np.array([0.1, 3.0, -2.0, 5.5, 1.0])
    assert spearman(np.exp(x), x) == pytest.approx(1.0)


def test_mse_by_hand() -> None:
    # Errors [0, -1, -2] -> (0 + 1 + 4) / 3
    assert mse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 5.0])) == pytest.approx(5 / 3)


def test_perfect_predictions() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    for name in ("accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman"):
        assert METRICS[name](labels, labels) == pytest.approx(1.0), name
    assert mse(labels, labels) == 0.0


def test_inverted_predictions() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0])
    inverted = 1 - labels
    assert accuracy(inverted, labels) == 0.0
    assert f1(inverted, labels) == 0.0
    for name in ("mcc", "pearson", "spearman"):
        assert METRICS[name](inverted, labels) == pytest.approx(-1.0), name


def test_constant_side_gives_zero_not_nan() -> None:
    """MCC and the correlations are undefined when one side is constant; they report 0.0."""
    labels = np.array([0, 1, 1, 0, 1])
    constant = np.ones_like(labels)
    for name in ("mcc", "pearson", "spearman"):
        assert METRICS[name](constant, labels) == 0.0, name
        assert METRICS[name](labels, constant) == 0.0, name
    # A constant that does not round-trip through the mean exactly is still constant.
    assert pearson(np.full(3, 0.1), np.array([1.0, 2.0, 4.0])) == 0.0


def test_f1_without_any_positive_is_zero() -> None:
    negatives = np.zeros(4, dtype=np.int64)
    assert f1(negatives, negatives) == 0.0


def test_results_are_python_floats() -> None:
    results = compute_metrics(list(METRICS), BINARY_PREDICTIONS, BINARY_LABELS)
    assert set(results) == set(METRICS)
    assert all(type(value) is float for value in results.values())


def test_only_mse_is_lower_is_better() -> None:
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert [name for name, higher in HIGHER_IS_BETTER.items() if not higher] == ["mse"]


def test_unknown_metric_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        compute_metrics(["acuracy"], BINARY_PREDICTIONS, BINARY_LABELS)


@pytest.mark.parametrize(
    ("predictions", "labels", "message"),
    [
        (np.array([]), np.array([]), "empty"),
        (np.array([1, 0]), np.array([1, 0, 1]), "shape"),
        (np.array([[1], [0]]), np.array([1, 0]), "shape"),
    ],
)
def test_bad_inputs_raise(predictions: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(["accuracy"], predictions, labels)
    for fn in METRICS.values():
        with pytest.raises(ValueError, match=message):
            fn(predictions, labels)


def test_classification_metrics_reject_probabilities() -> None:
    with pytest.raises(ValueError, match="class ids"):
        accuracy(np.array([0.2, 0.9]), np.array([0, 1]))


def test_summarize_runs() -> None:
    # Deviations from the mean 0.8: [0, 0.1, -0.1] -> std = sqrt(0.02 / 3) = 0.0816
    summary = summarize_runs([0.8, 0.9, 0.7])
    assert summary.median == pytest.approx(0.8)
    assert summary.mean == pytest.approx(0.8)
    assert (summary.min, summary.max) == (pytest.approx(0.7), pytest.approx(0.9))
    assert summary.std == pytest.approx(math.sqrt(0.02 / 3))
    assert summary.runs == (0.8, 0.9, 0.7)


def test_run_summary_as_dict_is_plain() -> None:
    summary = summarize_runs([np.float32(0.5), 0.7])
    as_dict = summary.as_dict()
    runs = as_dict.pop("runs")
    assert runs == pytest.approx([0.5, 0.7])
    assert as_dict == pytest.approx(
        {"median": 0.6, "mean": 0.6, "min": 0.5, "max": 0.7, "std": 0.1}
    )
    assert type(runs) is list
    assert all(type(v) is float for v in [*runs, *as_dict.values()])
    assert isinstance(summary, RunSummary)


def test_mean_and_std_are_numpys_where_the_median_is_not_the_mean() -> None:
    runs = [0.62, 0.91, 0.64, 0.66]  # one good seed pulls the mean above the median
    summary = summarize_runs(runs)
    assert summary.mean == pytest.approx(np.mean(runs)) and summary.mean > summary.median
    assert summary.std == pytest.approx(np.std(runs))
    assert summary.median == pytest.approx(np.median(runs))


def test_summarize_runs_rejects_no_runs() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        summarize_runs([])
