"""`ServeOptions`, what `bertflow serve` serves: the pipeline deployment's default config, its
retraining schedule, the new-corpus automation and how many runs go at once. Apart from
`deployments.py`, which loads Prefect, so that `bertflow serve --help` makes its options from
this config and loads nothing heavy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bertflow.flows.pipeline_config import PipelineConfig


class ServeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    config: PipelineConfig = Field(
        default_factory=PipelineConfig,
        description="The pipeline deployment's default parameters (the form's initial values).",
    )
    cron: str = Field(
        "0 3 * * 0", min_length=1, description="The pipeline's retraining schedule (Sundays 03:00)."
    )
    timezone: str = Field("UTC", min_length=1, description="The cron schedule's time zone.")
    schedule_active: bool = Field(
        False, description="Turn the schedule on (else it is off until turned on in the UI)."
    )
    automation: bool = Field(
        False, description="Enable the automation that runs the pipeline on each new corpus."
    )
    concurrency: int = Field(
        1, ge=1, description="Pipeline (and pretrain) runs at once per deployment; more queue."
    )
