"""The MLflow UI in a real browser (Debian's chromium, headless, driven by Playwright): a small
sweep's experiment opens on the runs table, the parent run lists its children, and the headline
metrics are columns a user can add. A screenshot of the runs table is kept in $SWEEP_ARTIFACTS
(CI's artifact folder) when that is set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import QUICK, mlflow_server, only_sweep_dir, run_cli

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        if os.environ.get("SWEEP_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (SWEEP_REQUIRE_BROWSER=1) but not installed: "
                        "apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_runs_table_shows_the_sweep(browser, tmp_path, cache_dir):
    proc = run_cli(["-m", "batch=1,2", "tracking.experiment=ui", *QUICK], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    printed = [line for line in proc.stdout.splitlines() if line.startswith("MLflow: ")]
    assert len(printed) == 1 and "#/experiments/" in printed[0], proc.stdout
    path = "#/experiments/" + printed[0].split("#/experiments/", 1)[1].strip()
    parent = f"batch=1,2 ({sweep_dir.parent.name}/{sweep_dir.name})"
    children = ["torch-resnet18-32-b1-fp32", "torch-resnet18-32-b2-fp32"]
    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path) as url:
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/{path}")  # the link the sweep printed
        page.wait_for_url("**/runs?**")  # the runs table, not the GenAI overview
        row = page.locator("div[role=row]", has_text=parent[:18]).first
        row.wait_for()
        assert page.get_by_text("3 matching runs").is_visible()  # the parent and its children
        row.locator("button").first.click()  # expand the parent
        for name in children:
            page.locator("div[role=row]", has_text=name).first.wait_for()
        page.get_by_role("button", name="Columns").click()
        menu = page.get_by_role("dialog")
        for metric in ("fps", "infer_ms_per_img", "infer_ms_p99"):
            menu.get_by_placeholder("Search").fill(metric)
            assert menu.get_by_text(metric, exact=True).first.is_visible(), metric
        page.keyboard.press("Escape")
        out = Path(os.environ.get("SWEEP_ARTIFACTS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "mlflow_runs_table.png"))
        page.close()
