"""`TaskSpec`, where a labelled downstream task lives and how to read it (the evaluate stage's
`--task` and `tasks` entries). Apart from `tasks.py`, which reads the files, so that building
or checking one needs no Arrow or fsspec."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bertflow.pipeline.core.errors import InputError
from bertflow.pipeline.core.literals import Problem

TaskFormat = Literal["auto", "glue", "csv", "tsv", "jsonl", "parquet"]
GlueTask = Literal["sst2", "cola", "mrpc", "rte", "qnli", "stsb", "qqp", "mnli", "wnli"]
_KEY_VALUE_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*=")


class TaskSpec(BaseModel):
    """Where a labelled task lives, how to read it and how often to fine-tune on it. Every field
    but `seeds` shapes the data read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        min_length=1, description="Local path or fsspec URL (s3://...) of a task file or folder."
    )
    name: str | None = Field(
        None,
        min_length=1,
        description="Name in reports; default: the GLUE task name, else the file or folder stem.",
    )
    format: TaskFormat = Field(
        "auto",
        description="'auto': a folder named after a GLUE task (or with glue_task set) is read as "
        "GLUE, anything else by file extension (.csv, .tsv, .jsonl/.json, .parquet).",
    )
    glue_task: GlueTask | None = Field(
        None,
        description="The GLUE layout of a folder; inferred from the folder's name (SST-2, sst2, "
        "STS-B, CoLA, ...) when unset.",
    )
    text_field: str = Field("text", min_length=1, description="Column with the (first) text.")
    text_pair_field: str | None = Field(
        None,
        min_length=1,
        description="Column with the second text of a pair; unset: 'text_pair' if that column "
        "exists, else the task has single texts.",
    )
    label_field: str = Field("label", min_length=1, description="Column with the label.")
    problem: Literal["auto", Problem] = Field(
        "auto",
        description="'auto': string, boolean or whole-number labels are classes, other numbers "
        "are regression targets.",
    )
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Share of a single file's rows held out for evaluation (a seeded split).",
    )
    split_seed: int = Field(0, description="Seed of the split of a single file.")
    seeds: int | None = Field(
        None,
        ge=1,
        le=20,
        description="Fine-tuning runs on this task; None: the evaluation's seeds, else by the "
        "task's size (5 under 10,000 training examples, 3 under 100,000, else 1).",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.glue_task is not None and self.format not in ("auto", "glue"):
            raise ValueError(f"glue_task: only with format 'glue' or 'auto', not {self.format!r}")
        return self

    @classmethod
    def parse(cls, spec: str) -> TaskSpec:
        """The CLI form: a bare PATH, or `key=value` pairs joined by commas, one of them `path=`.

        `path=data/reviews.csv,text_field=body,label_field=stars`. Keys may use dashes or
        underscores. A bare path that itself starts with `word=` must be written `./word=...`.
        Values cannot contain commas.
        """
        if not _KEY_VALUE_SPEC.match(spec):
            return cls._build(spec, {"path": spec})
        fields: dict[str, str] = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise InputError(f"task spec {spec!r}: {item!r} is not key=value")
            if key not in cls.model_fields:
                known = ", ".join(cls.model_fields)
                raise InputError(f"task spec {spec!r}: unknown key {key!r} (known: {known})")
            if key in fields:
                raise InputError(f"task spec {spec!r}: key {key!r} is given twice")
            fields[key] = value.strip()
        if "path" not in fields:
            raise InputError(f"task spec {spec!r}: no path= key")
        return cls._build(spec, fields)

    @classmethod
    def _build(cls, spec: str, fields: dict[str, str]) -> TaskSpec:
        """Validate, re-wording pydantic's errors as one line that names the spec and the keys."""
        try:
            return cls(**fields)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in e.errors()
            )
            raise InputError(f"task spec {spec!r}: {problems}") from None

    def identity(self) -> dict[str, Any]:
        """What shapes the data: every field but `seeds` (the files enter ids through their
        fingerprints). Evaluations of the same data with other seed counts stay comparable; the
        seeds still enter the evaluation's id, through its config."""
        return self.model_dump(mode="json", exclude={"seeds"})
