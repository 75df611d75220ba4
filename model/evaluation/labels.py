"""Tasks from CSV, TSV, JSON Lines and Parquet files: labels parsed (strings, numbers, bools),
their one kind checked, the problem inferred (whole numbers classify, others regress), class
ids assigned in train's order, and a single file split by seed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bertflow.model.evaluation.task_data import TaskData
from bertflow.model.evaluation.task_files import (
    INTEGER,
    NUMBER,
    Columns,
    LabelValue,
    RawSplit,
    TaskPlan,
    read_file,
    require_rows,
    task_split,
)
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Problem
from bertflow.pipeline.core.manifest import InputFingerprint

LabelKind = Literal["string", "number", "boolean"]


@dataclass(frozen=True)
class _Labels:
    """One split's labels, parsed: each value's kind and its value."""

    raw: RawSplit
    kinds: list[LabelKind]
    values: list[LabelValue]

    def take(self, index: np.ndarray, source: str) -> _Labels:
        pick = index.tolist()
        kinds, values = [self.kinds[i] for i in pick], [self.values[i] for i in pick]
        return _Labels(self.raw.take(index, source), kinds, values)


def read_files(spec: TaskSpec, plan: TaskPlan, inputs: list[InputFingerprint]) -> TaskData:
    train, evaluation = _read_labels(spec, plan)
    dev = None
    if plan.dev is not None:
        raw = read_file(plan.fs, plan.dev, plan.format, train.raw.columns)
        require_rows(raw, "dev")
        dev = _parse_labels(raw)
    labelled = [train, evaluation] + ([dev] if dev is not None else [])
    kind = _common_kind(labelled)
    problem = _problem(spec, kind, *labelled)
    if problem == "regression":
        names = None
        train_y, eval_y = _targets(train), _targets(evaluation)
        dev_y = _targets(dev) if dev is not None else None
        metrics: tuple[str, ...] = ("pearson", "spearman", "mse")
    else:
        names = _class_names(train, kind)
        train_y, eval_y = _class_ids(train, names), _class_ids(evaluation, names)
        dev_y = _class_ids(dev, names) if dev is not None else None
        metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy", "macro_f1")
    return TaskData(
        name=spec.name or plan.default_name,
        problem=problem,
        label_names=names,
        metrics=metrics,
        train=task_split(train.raw, train_y),
        evaluation=task_split(evaluation.raw, eval_y),
        evaluation_split=plan.evaluation_split,
        split_origin="seeded" if plan.evaluation is None else "files",
        inputs=inputs,
        dev=task_split(dev.raw, dev_y) if dev is not None and dev_y is not None else None,
    )


def _read_labels(spec: TaskSpec, plan: TaskPlan) -> tuple[_Labels, _Labels]:
    """(train, evaluation) with parsed labels: from their files, or one file split by seed."""
    columns = Columns(
        spec.text_field,
        spec.text_pair_field or "text_pair",
        spec.label_field,
        pair_required=spec.text_pair_field is not None,
    )
    raw = read_file(plan.fs, plan.train, plan.format, columns)
    require_rows(raw, "train")
    train = _parse_labels(raw)
    if plan.evaluation is None:
        _common_kind([train])  # bad labels are worth reporting before a failed split
        return _seeded_split(train, spec.test_fraction, spec.split_seed)
    # The evaluation file must have the pair column train has, and only that one.
    raw = read_file(plan.fs, plan.evaluation, plan.format, raw.columns)
    require_rows(raw, plan.evaluation_split)
    return train, _parse_labels(raw)


def _seeded_split(labels: _Labels, fraction: float, seed: int) -> tuple[_Labels, _Labels]:
    """(train, test): round(n * fraction) rows drawn by `seed` are held out; both in file order."""
    n = len(labels.values)
    n_eval = round(n * fraction)
    if not 0 < n_eval < n:
        raise InputError(
            f"{labels.raw.file}: {n} rows are too few to hold out test_fraction={fraction} "
            f"({n_eval} rows) for evaluation; add rows or change test_fraction"
        )
    order = np.random.default_rng(seed).permutation(n)
    train, held_out = np.sort(order[n_eval:]), np.sort(order[:n_eval])
    source = f"{labels.raw.file} (seeded split)"
    return labels.take(train, source), labels.take(held_out, source)


def _parse_labels(raw: RawSplit) -> _Labels:
    kinds: list[LabelKind] = []
    values: list[LabelValue] = []
    for i, value in enumerate(raw.labels):
        try:
            kind, parsed = _parse_label(value, raw.spelled_numbers)
        except ValueError as e:
            raise InputError(f"{raw.where(i)}: {e} in column {raw.columns.label!r}") from None
        kinds.append(kind)
        values.append(parsed)
    return _Labels(raw, kinds, values)


def _parse_label(value: Any, spelled_numbers: bool) -> tuple[LabelKind, LabelValue]:
    """A label's kind and value; ValueError says what is wrong with one that is neither."""
    if isinstance(value, bool):  # before int: bool is an int
        return "boolean", value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("missing label")
        if spelled_numbers and INTEGER.fullmatch(text):
            return "number", int(text)
        if not (spelled_numbers and NUMBER.fullmatch(text)):
            return "string", text
        value = float(text)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"label {value} is not a finite number")
        return "number", value
    if value is None:
        raise ValueError("missing label")
    raise ValueError(f"label {value!r} is a {type(value).__name__}, not text, a number or a bool")


def _common_kind(splits: list[_Labels]) -> LabelKind:
    """The one kind all labels share, or InputError showing one row of each kind."""
    examples: dict[LabelKind, str] = {}
    for labels in splits:
        for kind in dict.fromkeys(labels.kinds):
            i = labels.kinds.index(kind)
            examples.setdefault(kind, f"{labels.raw.where(i)} ({labels.values[i]!r})")
    if len(examples) > 1:
        files = " and ".join(dict.fromkeys(s.raw.file for s in splits))
        shown = "; ".join(f"a {kind} at {where}" for kind, where in examples.items())
        raise InputError(f"labels in {files} are not all of one kind: {shown}")
    return next(iter(examples))


def _problem(spec: TaskSpec, kind: LabelKind, *splits: _Labels) -> Problem:
    if kind != "number":
        if spec.problem == "regression":
            first = splits[0]
            raise InputError(
                f"{first.raw.file}: problem is 'regression' but the labels are {kind}s, "
                f"e.g. {first.raw.where(0)} ({first.values[0]!r})"
            )
        return "classification"
    if spec.problem != "auto":
        return spec.problem
    whole = all(_is_whole(v) for s in splits for v in s.values)
    return "classification" if whole else "regression"


def _is_whole(value: LabelValue) -> bool:
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _label_name(value: LabelValue) -> str:
    """A class's name: the label as written, numbers without a trailing '.0', bools lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and _is_whole(value):
        return str(int(value))
    return str(value)


def _class_names(train: _Labels, kind: LabelKind) -> list[str]:
    """Train's distinct labels: strings sorted, numbers and bools by value."""
    by_name: dict[str, LabelValue] = {}
    for value in train.values:
        by_name.setdefault(_label_name(value), value)
    names = sorted(by_name) if kind == "string" else sorted(by_name, key=by_name.__getitem__)
    if len(names) < 2:
        raise InputError(
            f"{train.raw.source}: the train split has a single class {names[0]!r}; "
            "classification needs two or more"
        )
    return names


def _class_ids(labels: _Labels, names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    ids = np.empty(len(labels.values), dtype=np.int64)
    for i, value in enumerate(labels.values):
        name = _label_name(value)
        if name not in index:
            raise InputError(
                f"{labels.raw.where(i)}: label {name!r} does not occur in the train split "
                f"(classes: {', '.join(names)})"
            )
        ids[i] = index[name]
    return ids


def _targets(labels: _Labels) -> np.ndarray:
    return np.asarray(labels.values, dtype=np.float64)
