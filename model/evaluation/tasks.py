"""Labelled downstream (fine-tuning) tasks: GLUE folders, CSV, TSV, JSON Lines and Parquet files.

A `TaskSpec` names a task: a file or a folder, local or behind an fsspec URL (`s3://...`), or
`demo-era`, the built-in task on speeches the demo corpus holds out (`demo_task.py`). A folder
carries its own splits (GLUE's TSVs, or `train.<ext>` beside `test|dev|validation.<ext>`); a single
file is split by seed. `read_task` returns plain lists and arrays, with the fingerprint of every
file it read so that an artifact made from a task changes id when the task's data changes.

Every problem with the data raises `InputError` naming the file (and line or row) and what is wrong:
a task is small enough that failing on the first bad row is cheaper than guessing what was meant.
Files are streamed, so a large GLUE task (MNLI's train.tsv is ~300 MB) costs only its used columns.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import fsspec
import numpy as np

from bertflow.model.evaluation.glue import GLUE_TASKS, glue_task_of_name, plan_glue, read_glue
from bertflow.model.evaluation.labels import read_files
from bertflow.model.evaluation.task_data import TaskData, TaskSplit
from bertflow.model.evaluation.task_files import (
    FILE_EXTENSIONS,
    FileFormat,
    TaskPlan,
    fingerprint,
    folder_file,
    task_file,
)
from bertflow.model.evaluation.task_spec import TaskSpec
from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.manifest import InputFingerprint, sha256_file
from bertflow.pipeline.ingest import demo_task

EVALUATION_SPLITS = ("test", "dev", "validation")  # a folder's evaluation file, preferred first


def task_inputs(spec: TaskSpec) -> list[InputFingerprint]:
    """Fingerprints of the files `read_task(spec)` reads, without parsing them (to name an
    artifact before any work)."""
    if spec.path == demo_task.DEMO_TASK:
        return _demo_inputs()
    plan = _plan(spec)
    return [fingerprint(plan.fs, f) for f in plan.files]


def read_task(spec: TaskSpec) -> TaskData:
    """Read and check a task's splits; every bad value fails here, before any training."""
    if spec.path == demo_task.DEMO_TASK:
        return _read_demo_task(spec)
    plan = _plan(spec)
    inputs = [fingerprint(plan.fs, f) for f in plan.files]
    if plan.glue_task is not None:
        return read_glue(spec, plan, plan.glue_task, inputs)
    return read_files(spec, plan, inputs)


def _demo_inputs() -> list[InputFingerprint]:
    return [
        InputFingerprint(
            uri=f"demo://sotu/{p.name}",
            size=p.stat().st_size,
            fingerprint="sha256:" + sha256_file(p),
        )
        for p in demo_task.task_speeches()
    ]


def _read_demo_task(spec: TaskSpec) -> TaskData:
    """`demo-era`: the era of a held-out speech's paragraph, fine-tuned and tested on different
    speeches. The spec's file options do not apply; only `name` (and `seeds`) do."""
    train, test = demo_task.era_splits()
    names = [label for _, label in demo_task.ERAS]

    def split(examples: demo_task.EraExamples, which: str) -> TaskSplit:
        labels = np.array([names.index(label) for label in examples.labels], dtype=np.int64)
        return TaskSplit(examples.texts, None, labels, f"{demo_task.DEMO_TASK} ({which} speeches)")

    return TaskData(
        name=spec.name or demo_task.DEMO_TASK,
        problem="classification",
        label_names=names,
        metrics=("accuracy", "macro_f1"),
        train=split(train, "train"),
        evaluation=split(test, "test"),
        evaluation_split="test",
        split_origin="by-speech",
        inputs=_demo_inputs(),
    )


def _plan(spec: TaskSpec) -> TaskPlan:
    try:
        fs, root = fsspec.core.url_to_fs(os.path.expanduser(spec.path))
        exists, is_dir = fs.exists(root), fs.isdir(root)
    except (ValueError, ImportError, OSError) as e:
        raise InputError(f"task path {spec.path!r}: cannot open ({e})") from None
    if not exists:
        raise InputError(f"task path {spec.path!r} does not exist")
    if is_dir:
        return _plan_folder(spec, fs, root)
    return _plan_file(spec, fs, root)


def _plan_file(spec: TaskSpec, fs: fsspec.AbstractFileSystem, root: str) -> TaskPlan:
    if spec.format == "glue" or spec.glue_task is not None:
        raise InputError(f"{spec.path}: a GLUE task is a folder of TSV files, not a file")
    suffix = PurePosixPath(root).suffix.lower()
    fmt = spec.format if spec.format != "auto" else _format_of_suffix(suffix)
    if fmt is None:
        raise InputError(
            f"{spec.path}: cannot tell the format from the extension {suffix!r}; "
            f"set format (one of {', '.join(FILE_EXTENSIONS)})"
        )
    train = task_file(fs, root, spec.path)
    return TaskPlan(fs, fmt, None, PurePosixPath(root).stem, train, None, "test")


def _plan_folder(spec: TaskSpec, fs: fsspec.AbstractFileSystem, root: str) -> TaskPlan:
    try:
        listing = fs.ls(root, detail=True)
    except OSError as e:
        raise InputError(f"{spec.path}: cannot list the folder ({e})") from None
    files = {PurePosixPath(e["name"]).name: e["name"] for e in listing if e.get("type") == "file"}
    glue_task = spec.glue_task or glue_task_of_name(PurePosixPath(root).name)
    asked_for_glue = spec.format == "glue" or spec.glue_task is not None
    if asked_for_glue and glue_task is None:
        raise InputError(
            f"{spec.path}: cannot tell which GLUE task the folder holds from its name; "
            f"set glue_task (one of {', '.join(GLUE_TASKS)})"
        )
    looks_like_glue = spec.format == "auto" and "train.tsv" in files
    if glue_task is not None and (asked_for_glue or looks_like_glue):
        return plan_glue(spec, fs, files, glue_task)
    return _plan_split_files(spec, fs, root, files)


def _plan_split_files(
    spec: TaskSpec, fs: fsspec.AbstractFileSystem, root: str, files: dict[str, str]
) -> TaskPlan:
    formats = list(FILE_EXTENSIONS) if spec.format == "auto" else [spec.format]
    trains = [(f, ext) for f in formats for ext in FILE_EXTENSIONS[f] if f"train{ext}" in files]
    found = ", ".join(sorted(files)) or "none"
    if not trains:
        wanted = ", ".join(f"train{e}" for f in formats for e in FILE_EXTENSIONS[f])
        raise InputError(f"{spec.path}: the folder has no {wanted} (files: {found})")
    if len(trains) > 1:
        names = ", ".join(f"train{ext}" for _, ext in trains)
        raise InputError(f"{spec.path}: the folder has several train files ({names}); set format")
    fmt, ext = trains[0]
    train = folder_file(fs, files, f"train{ext}", spec.path)
    for split in EVALUATION_SPLITS:
        if f"{split}{ext}" in files:
            evaluation = folder_file(fs, files, f"{split}{ext}", spec.path)
            dev = next(
                (
                    folder_file(fs, files, f"{d}{ext}", spec.path)
                    for d in EVALUATION_SPLITS[1:]
                    if split == "test" and f"{d}{ext}" in files
                ),
                None,
            )
            return TaskPlan(fs, fmt, None, PurePosixPath(root).name, train, evaluation, split, dev)
    wanted = ", ".join(f"{s}{ext}" for s in EVALUATION_SPLITS)
    raise InputError(f"{spec.path}: train{ext} needs one of {wanted} beside it (files: {found})")


def _format_of_suffix(suffix: str) -> FileFormat | None:
    return next((f for f, exts in FILE_EXTENSIONS.items() if suffix in exts), None)
