"""The Prefect UI (the default one, React, under /v2) in a real Chromium, against a real Prefect
server and `bertflow serve`: a custom run is made in the deployment's form with edited fields,
completes, and its summary artifact links, page by page in the same tab, down the lineage from
the evaluation's report to the corpus; an out-of-bounds value is refused naming the field.

Needs Debian's `chromium` (`.ci/run` installs it): Playwright's own browser download needs a
network these machines do not have."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from playwright.sync_api import Browser, Locator, Page, Response, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from prefect.client.orchestration import get_client
from prefect_records import PrefectRecords, bertflow_serve, poll

from bertflow.pipeline.core.store import ArtifactStore

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it): "
        "neither /usr/bin/chromium nor `chromium` on PATH",
    ),
]
# Headless, and quiet: without the background-networking flags chromium keeps dialing out.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PIPELINE = "pretraining-pipeline/bertflow-pipeline"
WAIT_MS = 30_000  # every wait on the page: the UI loads in seconds, under load in tens
RUN_TIMEOUT_S = 300.0


RECORDS = PrefectRecords()


@pytest.fixture(scope="module")
def served(prefect_server, pipeline_config, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """`bertflow serve` in its own process group, serving the full demo corpus and 20 steps,
    so that the form's edits (demo-small, a few steps) are what makes the run fast."""
    tmp_path = tmp_path_factory.mktemp("served-ui")
    store = ArtifactStore(str(tmp_path / "store"))
    tiny = pipeline_config(store.url, tmp_path)
    [phase] = tiny.phases
    config = tiny.model_copy(
        update={
            "ingest": tiny.ingest.model_copy(update={"sources": ["demo"]}),
            "phases": [
                phase.model_copy(
                    update={"pretrain": phase.pretrain.model_copy(update={"max_steps": 20})}
                )
            ],
        }
    )
    with bertflow_serve(tmp_path, config) as log:
        yield {
            "ui": prefect_server.url,
            "store": store,
            "log": log,
            "pipeline": RECORDS.deployment(PIPELINE),
        }


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """A fresh tab in a fresh context; `tmp_path` is where conftest saves it if the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    context.set_default_timeout(WAIT_MS)
    context.set_default_navigation_timeout(60_000)
    yield context.new_page()
    context.close()


def open_custom_run(page: Page, served: dict[str, Any]) -> None:
    """Deployments -> bertflow-pipeline -> Run -> Custom run, and wait for the form."""
    pipeline_id = served["pipeline"].id
    page.goto(f"{served['ui']}/v2/deployments")
    page.get_by_role("link", name="bertflow-pipeline", exact=True).click()
    wait_for_path(page, f"/v2/deployments/deployment/{pipeline_id}")
    page.get_by_role("button", name="Run").click()
    page.get_by_role("menuitem", name="Custom run").click()
    wait_for_path(page, f"/v2/deployments/deployment/{pipeline_id}/run")
    assert "parameters" in parse_qs(urlsplit(page.url).query)  # prefilled from the deployment
    field(page, "Max Steps (Optional)").locator("input").wait_for()  # the schema form is drawn


def wait_for_path(page: Page, path: str) -> None:
    """Wait until the page shows `path` (whatever its query, such as the tab it opened on)."""
    page.wait_for_url(lambda url: urlsplit(url).path == path)


def field(page: Page, label: str) -> Locator:
    """One field of the schema form: its label, description, menu and input."""
    group = "ancestor::div[contains(concat(' ', @class, ' '), ' group ')][1]"
    return page.locator(f"xpath=//label[normalize-space()='{label}']/{group}")


def submit(page: Page) -> Response:
    """Click Submit; the response to the create-flow-run request it makes. A 503 (Prefect's
    "retry me", from a busy SQLite) is clicked again, as a user would, at most 3 times."""
    for _ in range(3):
        with page.expect_response(lambda r: r.url.endswith("/create_flow_run")) as response:
            page.get_by_role("button", name="Submit").click()
        if response.value.status != 503:
            break
        time.sleep(2)
    return response.value


def listed(page: Page, name: str, reloads: int = 2) -> Locator:
    """The link to the run `name` in the list the page shows. The list is read when the page
    opens: a run that a busy server committed a moment later shows after a reload, as it would
    to a user pressing F5, so the page is reloaded (at most `reloads` times) before failing."""
    link = page.get_by_role("link", name=name, exact=True)
    for _ in range(reloads):
        try:
            link.wait_for(timeout=WAIT_MS / 2)
            return link
        except PlaywrightTimeoutError:
            page.reload()
    link.wait_for()
    return link


def content(page: Page) -> Locator:
    """The rendered markdown of the artifact page shown."""
    return page.get_by_test_id("markdown-display")


def follow(page: Page, artifact_id: str) -> None:
    """Click the shown artifact's first link to `artifact_id`: it opens, in this same tab, the
    content page of the latest keyed artifact for that id, headed with the id."""
    link = content(page).get_by_role("link", name=artifact_id, exact=True).first
    href, target = link.get_attribute("href"), link.get_attribute("target")
    expected = RECORDS.page(artifact_id)
    assert expected is not None and urlsplit(href or "").path == expected, (
        f"the link to {artifact_id} on {page.url} is {href}; expected {expected}, the content "
        "page of the latest artifact keyed by that id"
    )
    assert target in (None, "", "_self"), f"the link to {artifact_id} opens a new tab ({target})"
    link.click()
    wait_for_path(page, expected)
    expect(content(page).get_by_role("heading", level=1)).to_contain_text(artifact_id)
    assert page.context.pages == [page], "following a lineage link opened another tab"


def test_a_custom_run_from_the_form_completes_and_its_summary_links_down_to_the_corpus(
    served: dict[str, Any], page: Page, tmp_path: Path
):
    open_custom_run(page, served)
    sources = field(page, "Sources").locator("textarea")
    expect(sources).to_have_value("demo")  # the served config, before the edits
    sources.fill("demo-small")
    field(page, "Max Steps (Optional)").locator("input").fill("6")
    created = submit(page)
    assert created.status == 201, created.text()
    run = created.json()
    assert run["parameters"]["config"]["ingest"]["sources"] == ["demo-small"]
    assert run["parameters"]["config"]["phases"][0]["pretrain"]["max_steps"] == 6

    wait_for_path(page, f"/v2/deployments/deployment/{served['pipeline'].id}")
    listed(page, run["name"]).click()  # the deployment's run list
    wait_for_path(page, f"/v2/runs/flow-run/{run['id']}")

    def final() -> Any:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run["id"])).state
        return state if state is not None and state.is_final() else None

    state = poll(final, RUN_TIMEOUT_S)
    log = served["log"].read_text()[-3000:]
    assert state is not None, f"the run was not done after {RUN_TIMEOUT_S} s:\n{log}"
    assert state.is_completed(), f"the run ended {state.type.value}:\n{log}"
    page.reload()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()

    store: ArtifactStore = served["store"]
    [evaluation] = store.list("evaluation")
    model = store.require(evaluation.upstream["model"])
    shards = store.require(model.upstream["shards"])
    corpus = store.require(shards.upstream["corpus"])
    assert corpus.config["sources"] == ["demo-small"] and model.config["max_steps"] == 6

    page.get_by_role("tab", name="Artifacts").click()
    summary_card = page.get_by_role("link").filter(has_text="the artifacts this pipeline run made")
    summary_card.click()
    [summary] = RECORDS.artifacts(UUID(run["id"]), "markdown")
    wait_for_path(page, f"/v2/artifacts/artifact/{summary.id}")
    heading = content(page).get_by_role("heading", level=1)
    expect(heading).to_have_text(f"Pipeline run {run['name']}")  # which run, on its own page
    # The heading can show before the table below it: wait for the whole summary, whose last
    # row and closing paragraph both link the evaluation.
    expect(content(page).get_by_role("link", name=evaluation.id, exact=True)).to_have_count(2)
    links = (
        content(page)
        .get_by_role("link")
        .evaluate_all("links => links.map(a => [a.textContent.trim(), a.getAttribute('href')])")
    )
    wrong = [(text, href) for text, href in links if urlsplit(href).path != RECORDS.page(text)]
    assert len(links) >= 5 and not wrong, (
        f"the summary's links that do not open their artifact's latest content page: {wrong}"
    )
    page.screenshot(path=tmp_path / "summary.png", full_page=True)  # to look at, pass or fail

    follow(page, evaluation.id)
    page.screenshot(path=tmp_path / "evaluation-report.png", full_page=True)
    follow(page, model.id)
    follow(page, shards.id)
    follow(page, shards.upstream["tokenizer"])
    follow(page, corpus.id)


def test_an_out_of_bounds_value_is_refused_in_the_form_naming_the_field(
    served: dict[str, Any], page: Page
):
    runs_before = len(RECORDS.runs_of(served["pipeline"].id))
    open_custom_run(page, served)
    form_url = page.url
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "create_flow_run" in r.url else None)

    # The number input carries the schema's bound (min=1): the browser refuses to submit and
    # says why at the field, which it focuses.
    max_steps = field(page, "Max Steps (Optional)")
    steps_input = max_steps.locator("input")
    steps_input.fill("0")
    page.get_by_role("button", name="Submit").click()
    expect(steps_input).to_be_focused()
    assert steps_input.evaluate("e => e.validity.rangeUnderflow")
    assert "greater than or equal to 1" in steps_input.evaluate("e => e.validationMessage")
    assert requests == [] and page.url == form_url

    # Typed as JSON the browser checks nothing; the server refuses the run naming the field.
    max_steps.get_by_role("button", name="Open menu").click()
    page.get_by_role("menuitem", name="Use JSON Input").click()
    max_steps.locator(".cm-content").click()
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("0")
    refused = submit(page)
    assert refused.status == 409, refused.text()
    error = page.locator("[data-sonner-toast][data-type='error']")
    expect(error).to_contain_text("config.phases[0].pretrain.max_steps")
    expect(error).to_contain_text("less than the minimum of 1")
    assert page.url == form_url
    assert len(RECORDS.runs_of(served["pipeline"].id)) == runs_before
