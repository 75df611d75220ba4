"""`ServeOptions`, how `bertflow serve` serves the pipeline: its retraining schedule, the
new-corpus automation and how many runs go at once (the deployment's default parameters are a
`PipelineConfig`, given beside it). Apart from `deployments.py`, which loads Prefect, so that
every `bertflow` command builds its parser from this config and loads nothing heavy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
