"""What each stage leaves in Prefect: keyed artifacts, asset materializations, progress.

Our own manifests are the source of truth for lineage; these mirror them into Prefect so the
open-source UI shows each artifact with links to its upstream ids, and Prefect's asset events
(and Prefect Cloud's lineage graph) see the same dependencies.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.assets import Asset, AssetProperties, add_asset_metadata, materialize
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import get_current_settings
from prefect.tasks import MaterializingTask
from prefect.types.names import validate_valid_asset_key

from bertflow.pipeline.core.lineage import summarize
from bertflow.pipeline.core.progress import ProgressCallback, ProgressState
from bertflow.pipeline.core.store import ArtifactStore, Published

MAX_INPUT_ASSETS = 50
UI_VERSION_PATH = "v2"
P = ParamSpec("P")


def asset_key(store: ArtifactStore, artifact_id: str) -> str:
    """The artifact's location as an asset key, or `bertflow://kind/id` where that is no valid key
    (Prefect forbids spaces, '#', '%' and a few more characters in keys)."""
    try:
        return validate_valid_asset_key(store.asset_key(artifact_id))
    except ValueError:
        kind = artifact_id.partition("-")[0]
        return f"bertflow://{kind}/{artifact_id}"


def materializing(
    fn: Callable[P, Published],
    store: ArtifactStore,
    artifact_id: str,
    description: str,
    asset_deps: list[str],
) -> MaterializingTask[P, Published]:
    """Wrap a stage's build function in a task that materializes the artifact as a Prefect asset
    with explicit dependencies; the artifact's stats become the asset's metadata."""
    key = asset_key(store, artifact_id)
    kind = artifact_id.partition("-")[0]

    @functools.wraps(fn)
    def build(*args: P.args, **kwargs: P.kwargs) -> Published:
        published = fn(*args, **kwargs)
        add_asset_metadata(key, {"id": artifact_id, **flatten_stats(published.manifest.stats)})
        return published

    asset = Asset(key=key, properties=AssetProperties(name=artifact_id, description=description))
    return materialize(asset, asset_deps=asset_deps, cache_policy=NO_CACHE, name=f"build-{kind}")(
        build
    )


def upstream_assets(
    store: ArtifactStore, upstream: dict[str, str], input_uris: list[str]
) -> list[str]:
    """Asset keys of upstream artifacts and of (up to 50) raw input files."""
    keys = [asset_key(store, up_id) for up_id in upstream.values()]
    for uri in input_uris[:MAX_INPUT_ASSETS]:
        key = uri if "://" in uri else f"file://{uri}"
        try:
            keys.append(validate_valid_asset_key(key))
        except ValueError:
            continue  # a raw input whose name is no valid key is still in our manifest
    return keys


def record_artifact(
    store: ArtifactStore, published: Published, title: str, details: str = ""
) -> None:
    """A keyed markdown summary (with stage-specific `details`) and a keyed stats table."""
    m = published.manifest
    markdown = summary_markdown(store, published, title) + (f"\n\n{details}" if details else "")
    create_markdown_artifact(key=m.id, markdown=markdown, description=f"{title} {m.id}")
    create_table_artifact(
        key=f"{m.id}-stats", table=stats_table(m.stats), description=f"{title} statistics"
    )


def artifact_link(artifact_id: str) -> str:
    """A markdown link to the artifact's page in the Prefect UI, so the open-source UI walks the
    lineage one click a hop."""
    return f"[`{artifact_id}`]({artifact_page(artifact_id)})"


def artifact_page(artifact_id: str) -> str:
    """The artifact's page in the UI the server serves by default: the content of its latest
    keyed Prefect artifact (the key is the artifact id), or the key's page where this server
    has none (an artifact made against another server)."""
    with get_client(sync_client=True) as client:
        latest = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_id])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    page = f"artifact/{latest[0].id}" if latest else f"key/{artifact_id}"
    return f"{ui_base()}/artifacts/{page}"


def ui_base() -> str:
    """Where the default UI lives: Prefect 3.8 serves its newer UI under /v2 (the older one at
    the root has other routes), relative to the page when no UI URL is known."""
    ui = get_current_settings().ui_url
    return f"{ui.rstrip('/') if ui else ''}/{UI_VERSION_PATH}"


def summary_markdown(store: ArtifactStore, published: Published, title: str) -> str:
    m = published.manifest
    lines = [
        f"# {title}: `{m.id}`",
        "",
        f"- **uri**: `{store.uri(m.id)}`",
        f"- **cached**: {'yes, it already existed' if published.cached else 'no'}",
        f"- **created**: {m.created} by bertflow {m.producer.bertflow_version}"
        + (f" (commit `{m.producer.git_commit[:12]}`)" if m.producer.git_commit else ""),
        f"- **summary**: {summarize(m)}",
        "",
        "## Upstream",
        "",
    ]
    if m.upstream:
        lines += [
            f"- {role}: {artifact_link(up)} — `{store.uri(up)}`"
            for role, up in sorted(m.upstream.items())
        ]
    else:
        lines.append(f"- raw inputs only ({len(m.inputs)} files)")
    if m.inputs:
        lines += ["", "## Raw inputs", ""]
        lines += [f"- `{i.uri}` ({i.fingerprint[:30]})" for i in m.inputs[:20]]
        if len(m.inputs) > 20:
            lines.append(f"- … and {len(m.inputs) - 20} more (see the manifest)")
    lines += ["", f"Inspect with `bertflow lineage {m.id}` and `bertflow artifacts show {m.id}`."]
    return "\n".join(lines)


def stats_table(stats: dict[str, Any]) -> list[dict[str, str]]:
    return [{"statistic": k, "value": v} for k, v in flatten_stats(stats).items()]


def flatten_stats(stats: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_stats(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = "; ".join(str(v) for v in value) if value else "—"
        elif isinstance(value, bool):  # before int: True is an int too
            flat[name] = "yes" if value else "no"
        else:
            flat[name] = f"{value:,}" if isinstance(value, int) else str(value)
    return flat


class PrefectProgress:
    """A progress callback: updates a Prefect progress artifact and logs, both throttled."""

    def __init__(self, description: str, log_every_s: float = 15.0):
        self.artifact_id: UUID = create_progress_artifact(progress=0.0, description=description)
        self.log_every_s = log_every_s
        self._last_log = 0.0
        self.logger = get_run_logger()

    def __call__(self, state: ProgressState) -> None:
        update_progress_artifact(self.artifact_id, progress=round(100 * state.fraction, 1))
        report_stage_progress(state.fraction)
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s or state.fraction >= 1.0:
            self._last_log = now
            self.logger.info(state.describe())


def progress_callbacks(description: str) -> list[ProgressCallback]:
    return [PrefectProgress(description)]


class PipelineProgress:
    """The pipeline run's own progress artifact, so its page shows where the run is: the stage
    that runs (k of n) and that stage's own progress, which the stage's progress reports feed
    through `report_stage_progress` while the stage is `current`."""

    def __init__(self, stages: list[str], update_every_s: float = 2.0):
        self.stages = stages
        self.update_every_s = update_every_s
        self.artifact_id: UUID = create_progress_artifact(
            progress=0.0, description=f"pipeline: {len(stages)} stages, starting"
        )
        self._index = 0
        self._last_update = 0.0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """While the block runs, stage `name` is the current one; its progress moves ours."""
        self._index = self.stages.index(name)
        self._update(0.0, force=True)
        token = _current_pipeline.set(self)
        try:
            yield
        finally:
            _current_pipeline.reset(token)
        self._update(1.0, force=True)

    def stage_progress(self, fraction: float) -> None:
        self._update(fraction, force=False)

    def _update(self, fraction: float, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_update < self.update_every_s:
            return
        self._last_update = now
        done = self._index + min(max(fraction, 0.0), 1.0)
        name, count = self.stages[self._index], len(self.stages)
        finished = done >= count
        description = (
            "pipeline: all stages done"
            if finished
            else f"pipeline: stage {self._index + 1} of {count}, {name} "
            f"({100 * fraction:.0f}% of the stage)"
        )
        update_progress_artifact(
            self.artifact_id, progress=round(100 * done / count, 1), description=description
        )


_current_pipeline: contextvars.ContextVar[PipelineProgress | None] = contextvars.ContextVar(
    "bertflow_pipeline_progress", default=None
)


def report_stage_progress(fraction: float) -> None:
    """A stage's progress (0..1), passed on to the pipeline run's progress when a pipeline runs
    the stage; nothing otherwise."""
    pipeline = _current_pipeline.get()
    if pipeline is not None:
        pipeline.stage_progress(fraction)
