"""Compare and decide: statistics, best configuration, Pareto front, speedup, tables, plots, and
the same report from job folders, from summary.csv and from MLflow."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK, only_sweep_dir, run_cli
from mlflow.tracking import MlflowClient

from sweep import analysis as an
from sweep.plots import write_plots
from sweep.report import Options, main, render_markdown, write_reports
from sweep.significance import compare, mann_whitney_p
from sweep.sources import Sweep, coerce, load_csv, load_dir

PNG = b"\x89PNG\r\n\x1a\n"
STAGES = {"decode_ms": 2.0, "preprocess_ms": 1.5, "h2d_ms": 0.5, "infer_ms": 4.0,
          "postprocess_ms": 0.2}


# --- synthetic job folders ----------------------------------------------------------------


def _params(runtime: str, batch: int, cl: bool) -> dict:
    params = {"runtime": runtime, "model": "resnet18", "resolution": 224, "batch": batch,
              "precision": "fp32", "pipeline": "current", "device": "cuda",
              "flags.channels_last": cl, "flags.pin_memory": False, "bench.min_iters": 60,
              "tracking.uri": f"sqlite:///{runtime}{batch}{cl}.db"}  # bookkeeping: never matched
    if runtime == "onnx":
        params["runtime.opset"] = 18  # runtime-specific: speedups must ignore it
    return params


def write_job(root: Path, n: int, runtime: str, batch: int, cl: bool, mean_ms: float,
              sd_ms: float = 0.05, correct: float = 1.0, error: str | None = None) -> None:
    """A job folder with result.json and samples.json (`mean_ms` per batch call)."""
    d = root / f"{n}_{runtime}-resnet18-224-b{batch}-fp32"
    d.mkdir(parents=True)
    samples = np.random.default_rng(n).normal(mean_ms, sd_ms, 60).tolist()
    per_img = mean_ms / batch
    metrics = {} if error else {
        "infer_ms_per_img": per_img, "infer_ms_p50": mean_ms, "infer_ms_p90": mean_ms * 1.01,
        "infer_ms_p99": mean_ms * 1.02, "infer_cv_pct": 100 * sd_ms / mean_ms,
        "fps": 1000 / per_img, "gflop_per_img": 3.6, "tflops": 3.6 / per_img,
        "tflops_peak": 60.0, "util_pct": 100 * 3.6 / per_img / 60, "correct": correct,
        "e2e_ms_per_img": per_img + 4.2, "accuracy_top1_pct": 100.0 * correct, **STAGES}
    result = {"job": d.name.split("_", 1)[1], "status": "failed" if error else "ok",
              "error": error, "params": _params(runtime, batch, cl), "metrics": metrics,
              "info": {"hardware_used": "h100_sxm",
                       "util_basis": "fp32 peak of h100_sxm (60 TFLOPS)",
                       "correctness": "within tolerance" if correct else "max_abs_err 3.2 > 0.01"}}
    (d / "result.json").write_text(json.dumps(result))
    if not error:
        (d / "samples.json").write_text(json.dumps({"unit": "ms per batch", "samples_ms": samples}))


@pytest.fixture
def synthetic(tmp_path) -> Path:
    """Eight jobs: channels_last clearly better at batch 1, the same at batch 8; onnx 2.5x and
    2x torch; one job fastest of all but with wrong outputs; one failed."""
    root = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    write_job(root, 0, "torch", 1, False, 10.0)
    write_job(root, 1, "torch", 1, True, 8.0)
    write_job(root, 2, "torch", 8, False, 24.0, sd_ms=0.3)
    write_job(root, 3, "torch", 8, True, 24.05, sd_ms=0.3)
    write_job(root, 4, "onnx", 1, False, 4.0)
    write_job(root, 5, "onnx", 8, False, 8.0, correct=0.0)
    write_job(root, 6, "onnx", 16, False, 1.0, error="RuntimeError: CUDA out of memory")
    write_job(root, 7, "onnx", 8, True, 12.0, sd_ms=0.2)
    return root


def _job(sweep: Sweep, n: int) -> dict:
    return next(r for r in sweep.rows if r["job_dir"].startswith(f"{n}_"))


# --- statistics ---------------------------------------------------------------------------


def test_ab_verdict_clearly_different():
    rng = np.random.default_rng(0)
    c = compare(rng.normal(10, 1, 200).tolist(), rng.normal(12, 1, 200).tolist())
    assert c.verdict == "different" and c.real
    assert c.delta_pct == pytest.approx(20, abs=3)
    assert 0 < c.ci_low_pct < c.delta_pct < c.ci_high_pct
    assert c.p_value < 1e-10


def test_ab_verdict_no_real_difference():
    rng = np.random.default_rng(1)
    c = compare(rng.normal(10, 1, 200).tolist(), rng.normal(10, 1, 200).tolist())
    assert c.verdict == "no real difference" and not c.real
    assert c.ci_low_pct < 0 < c.ci_high_pct and c.p_value > 0.05


def test_ab_significant_but_too_small_to_matter_is_no_real_difference():
    rng = np.random.default_rng(2)
    c = compare(rng.normal(10, 0.01, 500).tolist(), rng.normal(10.03, 0.01, 500).tolist())
    assert c.p_value < 1e-6 and abs(c.delta_pct) < 1
    assert c.verdict == "no real difference"


def test_ab_three_samples_each_cannot_decide():
    c = compare([1.0, 1.1, 1.2], [5.0, 5.1, 5.2])
    assert c.verdict == "too few samples" and c.p_value == pytest.approx(0.1)


def test_ab_outliers_that_move_only_the_mean_are_inconclusive():
    rng = np.random.default_rng(3)
    a = rng.normal(10, 0.1, 100)
    b = np.r_[rng.normal(10, 0.1, 95), [1000.0] * 5]  # five stalls: mean x6, ranks unmoved
    c = compare(a.tolist(), b.tolist())
    assert c.p_value > 0.05 and c.ci_low_pct > 0
    assert c.verdict == "inconclusive"


def test_mann_whitney_exact_and_tied_values():
    a, b = np.arange(1.0, 6.0), np.arange(6.0, 11.0)
    assert mann_whitney_p(a, b) == pytest.approx(2 / 252)  # exact: the most extreme of C(10, 5)
    assert mann_whitney_p(np.ones(30), np.ones(30)) == 1.0  # all tied: no evidence at all


def test_coerce_restores_types_of_strings():
    assert [coerce(v) for v in ("32", "0.05", "True", "false", "None", "cuda:0", "1e-3")] == [
        32, 0.05, True, False, None, "cuda:0", 0.001]


# --- best configuration, Pareto front, speedup ---------------------------------------------


def _row(job: str, fps: float, p50: float, status: str = "ok", correct: float = 1.0) -> dict:
    return {"job_dir": job, "job": job, "status": status, "runtime": "torch", "batch": int(job[1:]),
            "fps": fps, "infer_ms_p50": p50, "correct": correct}


def test_best_config_and_pareto_front_on_known_rows():
    rows = [_row("b1", 100, 10), _row("b2", 150, 12), _row("b4", 140, 20), _row("b8", 300, 30),
            _row("b16", 320, 60), _row("b32", 2000, 1, correct=0.0), _row("b64", 0, 0, "failed")]
    sweep = Sweep("s", rows, ["runtime", "batch"])
    best = {b.objective: b.row["job"] if b.row else None
            for b in an.best_configs(sweep, max_latency_ms=25)}
    assert best == {"highest FPS": "b16", "lowest latency (p50 per batch call)": "b1",
                    "highest FPS with p50 per batch call <= 25 ms": "b2"}
    assert [r["job"] for r in an.pareto_front(rows)] == ["b1", "b2", "b8", "b16"]
    assert an.recommend(sweep, max_latency_ms=25).startswith("Deploy `runtime=torch batch=2`")
    assert "No configuration meets" in an.recommend(sweep, max_latency_ms=0.5)


def test_recommendation_goes_by_end_to_end_fps_when_every_job_has_it():
    rows = [_row("b1", 100, 10) | {"e2e_fps": 90}, _row("b8", 300, 30) | {"e2e_fps": 80}]
    text = an.recommend(Sweep("s", rows, ["runtime", "batch"]))
    assert text.startswith("Deploy `runtime=torch batch=1`: the highest end-to-end FPS (90.0)")


def test_speedup_matched_on_every_other_param(synthetic):
    sweep = load_dir(synthetic)
    assert an.add_speedups(sweep, "torch") == 3  # every finished onnx job has a torch twin
    assert _job(sweep, 0)["speedup_x"] == 1.0
    assert _job(sweep, 4)["speedup_x"] == pytest.approx(10 / 4)
    assert _job(sweep, 5)["speedup_x"] == pytest.approx(3.0 / 1.0)  # computed, flagged elsewhere
    assert _job(sweep, 7)["speedup_x"] == pytest.approx(24.05 / 12)


def test_ab_pairs_tell_a_real_change_from_noise(synthetic):
    sweep = load_dir(synthetic)
    assert an.ab_params(sweep) == ["flags.channels_last"]
    pairs = {p.context: p for p in an.ab_pairs(sweep, "flags.channels_last")}
    assert set(pairs) == {"runtime=torch batch=1", "runtime=torch batch=8"}  # onnx b8: 5 wrong
    b1, b8 = pairs["runtime=torch batch=1"].main(), pairs["runtime=torch batch=8"].main()
    assert b1.kind() == "better" and b1.delta_pct == pytest.approx(-20, abs=1)
    assert b1.verdict("flags.channels_last=true") == "flags.channels_last=true better by 20.0%"
    assert b8.kind() == "same" and b8.verdict("x") == "no real difference"


# --- the report ---------------------------------------------------------------------------


def test_report_from_job_folders(synthetic):
    paths = write_reports(synthetic, opts=Options(plots=True, max_latency_ms=9))
    md = (synthetic / "report.md").read_text()
    for heading in ("## Recommendation", "## Best configuration", "## Pareto front",
                    "## runtime=torch", "## runtime=onnx", "## Speedup vs torch", "## End to end",
                    "## A/B: flags.channels_last", "## Outputs wrong (excluded from best and A/B)",
                    "## Failed jobs", "## Plots"):
        assert heading in md, heading
    assert "8 jobs: 7 ok, 1 failed." in md
    assert "| resolution | batch | ms/image | FPS | TFLOPS achieved | TFLOPS peak | util % |" in md
    assert "| runtime | precision | pipeline | batch | flags.channels_last | inference ms/image " \
           "| E2E ms/image | accuracy % | agrees with current % | unreadable files |" in md
    assert "Preprocessing changes predictions" not in md
    assert "flags.channels_last=true better by 20" in md and "no real difference" in md
    assert "RuntimeError: CUDA out of memory" in md and "max_abs_err 3.2 > 0.01" in md
    deploy = md.split("## Recommendation", 1)[1].split("##", 1)[0]
    assert "runtime=onnx" in deploy and "batch=1" in deploy  # p50 <= 9 ms: onnx b1, 250 fps
    summary = json.loads((synthetic / "summary.json").read_text())
    assert summary["best"]["highest FPS"] == "7_onnx-resnet18-224-b8-fp32"  # not the wrong job 5
    assert summary["pareto_front"] == ["4_onnx-resnet18-224-b1-fp32", "7_onnx-resnet18-224-b8-fp32"]
    assert {p.name for p in paths if p.suffix == ".png"} == {
        "fps_vs_batch_resolution224.png", "speedup_vs_batch_resolution224.png",
        "e2e_stages.png", "ab_flags_channels_last.png"}


def test_plots_are_png_files_and_skipped_with_a_note(synthetic, tmp_path):
    plots = write_plots(load_dir(synthetic), tmp_path / "plots", ab=["flags.channels_last"])
    written = [p for p in plots if p.path]
    assert len(written) == 4
    for p in written:
        data = p.path.read_bytes()
        assert data[:8] == PNG and len(data) > 5000
    skipped = {p.name: p.note for p in plots if p.path is None}
    assert "fewer than two values of resolution" in skipped["fps_vs_resolution"]


def test_recommendation_says_when_the_lead_is_within_noise(synthetic):
    shutil.rmtree(synthetic / "7_onnx-resnet18-224-b8-fp32")  # leaves two torch b8 jobs on top
    sweep = load_dir(synthetic)
    text = an.recommend(sweep)
    assert text.startswith("Deploy `runtime=torch model=resnet18 resolution=224 batch=8 "
                           "precision=fp32 pipeline=current flags.channels_last=false`")
    assert "within noise" in text and "flags.channels_last=true" in text


def test_summary_csv_gives_the_same_report_as_the_job_folders(synthetic):
    write_reports(synthetic)
    from_dir, from_csv = load_dir(synthetic), load_csv(synthetic / "summary.csv")
    assert from_csv.params == from_dir.params and from_csv.samples == from_dir.samples
    assert render_markdown(from_csv) == render_markdown(from_dir)


def test_cli_needs_one_source(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2 and "--experiment" in capsys.readouterr().err


# --- one real sweep: report at the end, in MLflow, rebuilt from folders and from MLflow ------


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    cache = tmp_path_factory.mktemp("cache")
    proc = run_cli(["-m", "runtime=torch", "batch=1,2", "flags.channels_last=false,true",
                    "tracking.experiment=cmp", *QUICK], cwd, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, only_sweep_dir(cwd), cache


@pytest.mark.slow
def test_multirun_end_writes_report_plots_and_logs_them(real_sweep):
    cwd, sweep_dir, _ = real_sweep
    md = (sweep_dir / "report.md").read_text()
    assert "## A/B: flags.channels_last" in md and "## Recommendation" in md
    assert list((sweep_dir / "plots").glob("fps_vs_batch_resolution32.png"))
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cmp")
    parent = next(r for r in client.search_runs([exp.experiment_id])
                  if r.data.tags.get("sweep.role") == "parent")
    assert parent.data.params["flags.channels_last"] == "false,true"
    assert parent.data.tags["sweep.recommendation"].startswith("Deploy `runtime=torch")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "summary.csv", "summary.json", "plots"} <= names
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/fps_vs_batch_resolution32.png" in plots


@pytest.mark.slow
def test_children_share_param_and_metric_names(real_sweep):
    cwd, _, _ = real_sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cmp")
    children = [r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("sweep.role") == "job"]
    assert len(children) == 4
    assert len({frozenset(c.data.params) for c in children}) == 1
    assert len({frozenset(c.data.metrics) for c in children}) == 1
    assert {"runtime", "batch", "flags.channels_last"} <= set(children[0].data.params)


@pytest.mark.slow
def test_report_from_mlflow_equals_report_from_job_folders(real_sweep, tmp_path):
    cwd, sweep_dir, cache = real_sweep
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    a, b = tmp_path / "from_dirs", tmp_path / "from_mlflow"
    proc = run_cli([str(sweep_dir), "--out", str(a), "--log-to-parent"], cwd, cache,
                   module="sweep.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logged to MLflow parent run" in proc.stdout
    proc = run_cli(["--experiment", "cmp", "--tracking-uri", uri, "--out", str(b)], cwd, cache,
                   module="sweep.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (a / "report.md").read_text()
    assert "## runtime=torch" in report and "## A/B: flags.channels_last" in report
    assert (b / "report.md").read_text() == report
    assert (b / "summary.csv").read_text() == (a / "summary.csv").read_text()
    rows = list(csv.DictReader(open(b / "summary.csv")))
    assert len(rows) == 4 and all(float(r["fps"]) > 0 for r in rows)


def test_pipeline_that_disagrees_with_current_is_called_out(synthetic):
    """Seed 000's gpu pipeline lost 7% accuracy unnoticed: the report must say it."""
    path = synthetic / "1_torch-resnet18-224-b1-fp32" / "result.json"
    result = json.loads(path.read_text())
    result["metrics"].update(pipeline_agreement_pct=92.98, unreadable_files=2)
    path.write_text(json.dumps(result))
    write_reports(synthetic)
    md = (synthetic / "report.md").read_text()
    assert ("Preprocessing changes predictions: torch-resnet18-224-b1-fp32 agrees with "
            "pipeline=current on 93.0% of the images") in md


def test_a_report_from_a_store_creates_nothing_where_it_only_reads(tmp_path, cache_dir):
    """--experiment reads: a missing store or experiment is named, and no empty database or
    experiment is left behind."""
    proc = run_cli(["--experiment", "nothere"], tmp_path, cache_dir, module="sweep.report")
    assert proc.returncode == 2 and "no MLflow store at sqlite:///mlflow.db" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("other")
    proc = run_cli(["--experiment", "nothere"], tmp_path, cache_dir, module="sweep.report")
    assert proc.returncode == 2 and "has no experiment 'nothere'" in proc.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name("nothere") is None
