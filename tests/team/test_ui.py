"""The MLflow UI in a real browser (Debian's headless Chromium driven by Playwright).

`mlflow ui` over the tracking server's store (what `make ui` does for the
local store) shows the run's test metric and its reconstruction image. The
screenshot is saved in the test's folder, and also to $AEFLOW_UI_SCREENSHOT
when set (that is how docs/mlflow_ui.png is made).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright  # a missing package fails collection: CI installs it

from tests.helpers import require_system_path, start_mlflow_server
from tests.team.conftest import stop_server

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package; never a downloaded browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 180_000  # the single-page app loads slowly on a busy 2-core machine


def test_run_page_shows_test_metric_and_reconstructions(team_project, tracking_server, tmp_path):
    require_system_path(CHROMIUM, "chromium")
    run_id = json.loads((team_project.path / "models/run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(tracking_server.url).get_run(run_id)
    metric = run.data.metrics["test/sq_err_per_image"]
    stored = next(tracking_server.artifacts.rglob("figures/reconstructions.png"))
    with Image.open(stored) as img:
        size = list(img.size)

    # The UI is `mlflow server` on the tracking server's own store.
    store, artifacts = tracking_server.backend_uri, tracking_server.artifacts
    ui = start_mlflow_server(tmp_path, backend_uri=store, artifacts=artifacts)
    page_url = f"{ui.url}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    screenshot = tmp_path / "mlflow_ui.png"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(page_url)
            # Overview: the metrics table, filtered to the test metric.
            page.get_by_placeholder("Search metrics").fill("test/sq_err_per_image")
            row = page.locator("[role=row], tr").filter(has_text="test/sq_err_per_image").first
            row.wait_for()
            assert repr(metric)[:8] in row.inner_text(), row.inner_text()
            # Artifacts: the reconstruction figure, fetched from the server and decoded by the browser.
            page.goto(f"{page_url}/artifacts/figures/reconstructions.png")
            image = page.locator("img[src^='blob:']:visible").first  # the artifact, fetched as a blob
            image.wait_for()
            page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=image.element_handle())
            assert image.evaluate("e => [e.naturalWidth, e.naturalHeight]") == size
            page.get_by_text("figures/reconstructions.png").first.wait_for()
            assistant = page.get_by_text("MLflow Assistant", exact=True)
            if assistant.count():  # a side panel that hides half the run page: close it for the picture
                with contextlib.suppress(PlaywrightError):  # cosmetic only
                    page.get_by_role("button", name="Close", exact=True).last.click(timeout=15_000)
                    assistant.first.wait_for(state="hidden", timeout=15_000)
            page.screenshot(path=str(screenshot))
            browser.close()
    finally:
        stop_server(ui)
    with Image.open(screenshot) as shot:
        colours = sorted(shot.convert("RGB").getcolors(1 << 24), reverse=True)
    # A page that rendered (tables, text, the figure), not a blank or loading one: some colours,
    # none covering nearly everything (docs/mlflow_ui.png: 64 colours, the commonest 76%).
    share = colours[0][0] / sum(n for n, _ in colours)
    assert len(colours) >= 16 and share < 0.95, (len(colours), share)
    if os.environ.get("AEFLOW_UI_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["AEFLOW_UI_SCREENSHOT"])
