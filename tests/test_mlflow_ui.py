"""The MLflow UI in a real browser (Debian's chromium, headless, driven by Playwright): a small
sweep's printed link opens the runs table in the sweep's view (its headline figures first), the
parent run lists its children by what the sweep varies, and four selected runs show their fps and
p99 on one screen, as logged. A screenshot of the runs table is kept in $SWEEP_ARTIFACTS (CI's
artifact folder) when that is set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import QUICK, mlflow_server, only_sweep_dir, run_cli

from sweep.tracking.mlflow_store import HEADLINE_RUN, NOTE_SHOWN, headline_note, rounded

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_a_run_describes_its_headline_figures_rounded():
    assert [rounded(v) for v in (2.180488, 64.349, 187.516, 1065.79, 0.0512345, 0.0)] == [
        "2.18", "64.3", "188", "1066", "0.0512", "0"]
    offline = {"infer_ms_p99": 6.1234, "fps": 1234.56, "correct": 1.0, "infer_ms_p50": 5.2049,
               "util_pct": 41.96, "energy_j_per_img": 0.051234, "infer_ms_mean": 5.5}
    assert headline_note(offline) == ("1235 fps · p50 5.20 ms · p99 6.12 ms · util 42.0% · "
                                      "0.0512 J/img · correct")
    # the runs table shows a description's first 50 characters: throughput and latency fit
    assert "p99 6.12 ms" in headline_note(offline)[:NOTE_SHOWN]
    serving = {"server_qps": 99.94, "latency_ms_p99": 250.4, "correct": 0.0,
               "fps": float("nan")}
    assert headline_note(serving) == "WRONG · 99.9 qps · p99 250 ms"  # a wrong result first
    assert headline_note({}) == ""


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


def _logged(uri: str, experiment: str) -> dict[str, dict[str, float]]:
    """The metrics of each job run, by run name, as the store holds them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_name: r.data.metrics for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("sweep.role") == "job"}


def _figures(page, name: str) -> dict:
    """What the runs table shows of run `name`: ag-grid splits a row between its pinned name
    column and the other columns, one row id in both."""
    named = page.locator("div[role=row]", has_text=name).first
    row = page.locator(f"div[role=row][row-id='{named.get_attribute('row-id')}']")

    def cell(column: str):
        return row.locator(f"[col-id='{column}']").first

    shown = {"description": cell("attributes.`Description`"), "fps": cell("metrics.`fps`"),
             "p99": cell("metrics.`infer_ms_p99`")}
    return {"selected": named.locator("input[type=checkbox]").first.is_checked(),
            "boxes": [c.bounding_box() for c in shown.values()],
            **{key: c.inner_text() for key, c in shown.items()}}


def _on_screen(box: dict | None, viewport: dict) -> bool:
    return box is not None and box["x"] >= 0 and box["y"] >= 0 and \
        box["x"] + box["width"] <= viewport["width"] + 1 and \
        box["y"] + box["height"] <= viewport["height"] + 1


@pytest.mark.slow
def test_four_runs_compared_from_the_printed_link(browser, tmp_path, cache_dir):
    proc = run_cli(["-m", "runtime=torch,onnx", "batch=1,2", "tracking.experiment=ui", *QUICK],
                   tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    printed = [line for line in proc.stdout.splitlines() if line.startswith("MLflow: ")]
    assert len(printed) == 1 and "#/experiments/" in printed[0], proc.stdout
    path = "#/experiments/" + printed[0].split("#/experiments/", 1)[1].strip()
    assert "viewStateShareKey=" in path, path  # the sweep's view of the runs table
    parent = f"runtime=torch,onnx batch=1,2 ({sweep_dir.parent.name}/{sweep_dir.name})"
    # what the sweep varies first, where the runs table cuts names (about 18 characters)
    children = [f"{rt} b{b} · resnet18-32-fp32" for rt in ("torch", "onnx") for b in (1, 2)]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = _logged(uri, "ui")
    assert sorted(logged) == sorted(children)
    assert len({name[:18] for name in children}) == 4
    # the job folders keep their names (result.json's `job`)
    assert sorted(p.name.split("_", 1)[1] for p in sweep_dir.glob("*_*") if p.is_dir()) == \
        sorted(f"{rt}-resnet18-32-b{b}-fp32" for rt in ("onnx", "torch") for b in (1, 2))
    viewport = {"width": 1920, "height": 1080}  # a desktop screen
    with mlflow_server(uri, tmp_path) as url:
        page = browser.new_page(viewport=viewport)
        page.set_default_timeout(60_000)
        page.goto(f"{url}/{path}")  # the link the sweep printed
        page.wait_for_url("**/runs?**")  # the runs table, not the GenAI overview
        row = page.locator("div[role=row]", has_text=parent[:18]).first
        row.wait_for()
        assert page.get_by_text("5 matching runs").is_visible()  # the parent and its children
        row.locator("button").first.click()  # expand the parent
        # every other metric is a column a user can add (the toolbar shows Columns until runs
        # are selected)
        page.get_by_role("button", name="Columns").click()
        menu = page.get_by_role("dialog")
        for metric in ("fps", "infer_ms_per_img", "infer_ms_p99"):
            menu.get_by_placeholder("Search").fill(metric)
            assert menu.get_by_text(metric, exact=True).first.is_visible(), metric
        page.keyboard.press("Escape")
        for name in children:
            child = page.locator("div[role=row]", has_text=name).first
            child.wait_for()
            child.locator("input[type=checkbox]").first.check()  # select the four runs
        for name in children:
            metrics, figures = logged[name], _figures(page, name)
            assert figures["selected"], name
            # the description column: the headline figures, rounded, beside the run's name
            assert all(_on_screen(b, viewport) for b in figures["boxes"]), (name, figures)
            shown, note = figures["description"], headline_note(metrics)
            assert shown.startswith(f"{rounded(metrics['fps'])} fps · "), (name, shown)
            assert f"· p99 {rounded(metrics['infer_ms_p99'])} ms" in shown, (name, shown)
            assert shown in (note, note[:NOTE_SHOWN] + "..."), (name, shown)
            # the headline metrics are the next columns, fps first, as logged
            assert float(figures["fps"]) == pytest.approx(metrics["fps"]), name
            assert float(figures["p99"]) == pytest.approx(metrics["infer_ms_p99"]), name
        out = Path(os.environ.get("SWEEP_ARTIFACTS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "mlflow_runs_table.png"))
        # the headline metrics only, not the thirty others a job logs
        headers = page.eval_on_selector_all(".ag-header-cell[col-id^='metrics.']",
                                            "cells => cells.map(c => c.getAttribute('col-id'))")
        assert sorted(headers) == sorted(f"metrics.`{m}`" for m in HEADLINE_RUN
                                         if m in logged[children[0]]), headers
        page.close()
