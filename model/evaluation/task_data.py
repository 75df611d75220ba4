"""A labelled task as read: its splits (texts, optional pairs, labels), what the labels mean,
which metrics to report, and every file it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from bertflow.pipeline.core.literals import Problem
from bertflow.pipeline.core.manifest import InputFingerprint


@dataclass(frozen=True, eq=False)  # eq=False: a generated __eq__ cannot compare arrays
class TaskSplit:
    """One split of a task: texts, optional second texts, labels, all of one length."""

    texts: list[str]
    pairs: list[str] | None  # second sentences, or None for single-sentence tasks
    labels: np.ndarray  # (N,) int64 class ids (classification) or float64 targets (regression)
    source: str  # the file it came from, with " (seeded split)" when split by seed

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, eq=False)
class TaskData:
    """A task as read: both splits, what the labels mean, and which metrics to report."""

    name: str
    problem: Problem
    label_names: list[str] | None  # classification: class names, index = class id
    metrics: tuple[str, ...]  # primary first
    train: TaskSplit
    evaluation: TaskSplit  # the split the reported metrics come from
    evaluation_split: str  # "test", "dev" or "validation"
    split_origin: Literal["files", "seeded", "by-speech"]
    inputs: list[InputFingerprint]  # every file read
    dev: TaskSplit | None = None  # the task's own dev split, beside a labelled test split

    @property
    def num_labels(self) -> int:
        """Outputs of the task's head: one per class, or one regression target."""
        return len(self.label_names) if self.label_names is not None else 1
