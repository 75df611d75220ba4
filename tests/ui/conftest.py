"""On a failed browser test, every page its browser context has open is saved (a full-page
screenshot and the HTML) under the test's tmp_path, and the failure report says where."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.failed and report.when in ("setup", "call") and page is not None:
        folder = save_pages(page.context.pages, item.funcargs["tmp_path"] / "browser-at-failure")
        report.sections.append(
            ("browser at failure", f"screenshots and HTML of every open page: {folder}")
        )
    return report


def save_pages(pages: list[Any], folder: Path) -> Path:
    """`<n>-<url path>.png` and `.html` for each page; a page that cannot be saved is skipped
    (saving must never hide the failure that asked for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, page in enumerate(pages, start=1):
        name = f"{number}-" + re.sub(r"[^A-Za-z0-9]+", "-", page.url.split("://")[-1])[:80]
        with contextlib.suppress(PlaywrightError):
            page.screenshot(path=folder / f"{name}.png", full_page=True, timeout=15_000)
        with contextlib.suppress(PlaywrightError):
            (folder / f"{name}.html").write_text(page.content())
    return folder
