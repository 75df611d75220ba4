"""GLUE tasks: where each task's TSVs keep their columns, what their labels mean and which
metrics GLUE reports; planning a GLUE folder (test files without labels fall back to dev) and
reading it."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import get_args

import fsspec
import numpy as np

from bertflow.model.evaluation.task_data import TaskData
from bertflow.model.evaluation.task_files import (
    GLUE_DIALECT,
    NUMBER,
    Columns,
    RawSplit,
    TaskFile,
    TaskPlan,
    csv_reader,
    folder_file,
    looks_like_header,
    open_text,
    read_delimited,
    require_rows,
    task_split,
)
from bertflow.model.evaluation.task_spec import GlueTask, TaskSpec
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Problem
from bertflow.pipeline.core.manifest import InputFingerprint

GLUE_TASKS: tuple[GlueTask, ...] = get_args(GlueTask)


@dataclass(frozen=True)
class GlueLayout:
    """Where a GLUE task's TSVs keep their columns, and what their labels mean."""

    text: str
    pair: str | None
    label: str
    label_names: tuple[str, ...] | None  # fixed class order; None: regression
    metrics: tuple[str, ...]
    headerless: tuple[str, ...] | None = None  # column names of files without a header row
    dev_file: str = "dev.tsv"
    test_file: str = "test.tsv"


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")


GLUE_LAYOUTS: dict[GlueTask, GlueLayout] = {
    "sst2": GlueLayout("sentence", None, "label", _BINARY, ("accuracy",)),
    "cola": GlueLayout(
        "sentence",
        None,
        "label",
        _BINARY,
        ("mcc", "accuracy"),
        headerless=("source", "label", "original_mark", "sentence"),
    ),
    "mrpc": GlueLayout("#1 String", "#2 String", "Quality", _BINARY, ("f1", "accuracy")),
    "rte": GlueLayout("sentence1", "sentence2", "label", _ENTAILMENT, ("accuracy",)),
    "wnli": GlueLayout("sentence1", "sentence2", "label", _BINARY, ("accuracy",)),
    "qnli": GlueLayout("question", "sentence", "label", _ENTAILMENT, ("accuracy",)),
    "stsb": GlueLayout("sentence1", "sentence2", "score", None, ("pearson", "spearman")),
    "qqp": GlueLayout("question1", "question2", "is_duplicate", _BINARY, ("f1", "accuracy")),
    "mnli": GlueLayout(
        "sentence1",
        "sentence2",
        "gold_label",
        ("contradiction", "entailment", "neutral"),
        ("accuracy",),
        dev_file="dev_matched.tsv",
        test_file="test_matched.tsv",
    ),
}


def glue_task_of_name(name: str) -> GlueTask | None:
    """`SST-2`, `sst_2`, `STS-B`, `CoLA` -> the GLUE task; anything else -> None."""
    key = re.sub(r"[-_\s]", "", name).lower()
    return next((t for t in GLUE_TASKS if t == key), None)


def plan_glue(
    spec: TaskSpec, fs: fsspec.AbstractFileSystem, files: dict[str, str], task: GlueTask
) -> TaskPlan:
    layout = GLUE_LAYOUTS[task]
    found = ", ".join(sorted(files)) or "none"
    if "train.tsv" not in files:
        raise InputError(f"{spec.path}: GLUE task {task} needs train.tsv (files: {found})")
    train = folder_file(fs, files, "train.tsv", spec.path)
    if layout.test_file in files:
        test = folder_file(fs, files, layout.test_file, spec.path)
        if _glue_file_has_labels(fs, test, layout):  # GLUE's own test files carry no labels
            dev = (
                folder_file(fs, files, layout.dev_file, spec.path)
                if (layout.dev_file in files)
                else None
            )
            return TaskPlan(fs, "tsv", task, task, train, test, "test", dev)
    if layout.dev_file in files:
        dev = folder_file(fs, files, layout.dev_file, spec.path)
        return TaskPlan(fs, "tsv", task, task, train, dev, "dev")
    raise InputError(
        f"{spec.path}: GLUE task {task} needs {layout.dev_file}, or a {layout.test_file} with a "
        f"{layout.label!r} column, to evaluate on (files: {found})"
    )


def _glue_columns(layout: GlueLayout) -> Columns:
    return Columns(layout.text, layout.pair, layout.label)


def _glue_file_has_labels(
    fs: fsspec.AbstractFileSystem, file: TaskFile, layout: GlueLayout
) -> bool:
    """Whether a GLUE file carries labels, from its first row only (planning stays cheap)."""
    with open_text(fs, file) as text:
        try:
            first = next(csv_reader(text, GLUE_DIALECT), None)
        except csv.Error:
            return True  # let the full read report it
    if first is None:
        return True  # an empty file: let the full read report the empty split
    columns = _glue_columns(layout)
    if layout.headerless is not None and not looks_like_header(first, columns):
        return len(first) >= len(layout.headerless)
    return layout.label in first


def read_glue(
    spec: TaskSpec, plan: TaskPlan, task: GlueTask, inputs: list[InputFingerprint]
) -> TaskData:
    layout = GLUE_LAYOUTS[task]
    problem: Problem = "regression" if layout.label_names is None else "classification"
    if spec.problem not in ("auto", problem):
        raise InputError(f"{spec.path}: problem is {spec.problem!r}, but GLUE {task} is {problem}")
    assert plan.evaluation is not None  # GLUE folders always hold their evaluation split
    splits = []
    files = [(plan.train, "train"), (plan.evaluation, plan.evaluation_split)]
    for file, split in files + ([(plan.dev, "dev")] if plan.dev is not None else []):
        raw = read_delimited(plan.fs, file, GLUE_DIALECT, _glue_columns(layout), layout.headerless)
        require_rows(raw, split)
        splits.append(task_split(raw, _glue_labels(raw, task, layout)))
    return TaskData(
        name=spec.name or task,
        problem=problem,
        label_names=list(layout.label_names) if layout.label_names is not None else None,
        metrics=layout.metrics,
        train=splits[0],
        evaluation=splits[1],
        evaluation_split=plan.evaluation_split,
        split_origin="files",
        inputs=inputs,
        dev=splits[2] if len(splits) > 2 else None,
    )


def _glue_labels(raw: RawSplit, task: GlueTask, layout: GlueLayout) -> np.ndarray:
    """Class ids in the layout's fixed order, or float scores for STS-B."""
    out = np.empty(len(raw.labels), dtype=np.int64 if layout.label_names else np.float64)
    index = {name: i for i, name in enumerate(layout.label_names or ())}
    for i, value in enumerate(raw.labels):
        text = (value or "").strip()
        if not text:
            raise InputError(f"{raw.where(i)}: missing label in column {layout.label!r}")
        if layout.label_names is None:
            score = float(text) if NUMBER.fullmatch(text) else math.nan
            if not math.isfinite(score):
                raise InputError(f"{raw.where(i)}: score {text!r} is not a number")
            out[i] = score
        elif text in index:
            out[i] = index[text]
        else:
            names = ", ".join(layout.label_names)
            raise InputError(f"{raw.where(i)}: label {text!r} is not one of {task}'s ({names})")
    return out
