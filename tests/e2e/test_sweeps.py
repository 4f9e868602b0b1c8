"""Sweeps end to end: `python -m kronos_exp -m ...` grids, the joblib launcher, the Optuna search,
one MLflow view per sweep, shared phases trained once, the job table, and failing sweeps.

Every CLI run here uses its own SQLite store in a tmp folder (the cwd of the subprocess), so counts
of runs and registered versions are exact.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# Smaller than FAST (same keys, so nothing is overridden twice): 4 optimiser steps per phase.
SMALL = [
    "data.max_train_windows=128",
    "data.max_eval_windows=32",
    "tokenizer.epochs=1",
    "predictor.epochs=1",
]
GRID = ["predictor.lr=1e-5,4e-5", "data.lookback_window=64,128"]  # the command, 4 jobs
LR_GRID = ["predictor.lr=1e-3,2e-3,3e-3,4e-3"]  # 4 jobs sharing one tokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread per CLI process: on a busy 2-core machine, two spinning OpenMP threads per
    process make training an order of magnitude slower. Timing, not behaviour: parallel jobs get one
    thread each from the pipeline anyway. (Cli.env passes the environment on.)"""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def _sweep(cli, *overrides: str, multirun: bool = True, check: bool = True):
    """``python -m kronos_exp [-m] SMALL overrides``: SMALL instead of FAST (same keys, so no value
    is given twice); ``-m`` must come before the overrides."""
    return cli.run(*(["-m"] if multirun else []), *SMALL, *overrides, fast=False, check=check)


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def _parts(cli):
    """(the sweep run, job runs by job_num, {job run id: {phase: run}}) of the store's one sweep."""
    runs = cli.runs()
    sweeps = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(sweeps) == 1, [r.data.tags for r in runs]
    sweep = sweeps[0]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    job_ids = {r.info.run_id for r in jobs}
    phases: dict[str, dict[str, object]] = {run_id: {} for run_id in job_ids}
    for r in runs:
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent in job_ids:
            phases[parent][r.data.tags["phase"]] = r
    # Nothing outside the tree: sweep, its jobs, their phases.
    assert len(runs) == 1 + len(jobs) + sum(len(p) for p in phases.values()), [r.data.tags for r in runs]
    return sweep, sorted(jobs, key=lambda r: int(r.data.tags["job_num"])), phases


def _download(cli, run_id: str, path: str, dst: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst),
                                                    tracking_uri=cli.tracking_uri))


def _sweep_dir(cli) -> Path:
    dirs = [p for p in (cli.root / "outputs" / "multirun").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _table(output: str) -> tuple[list[str], list[dict[str, str]]]:
    """(the overrides every job shares, one dict per row by column) of the job table logged at the
    end of a multirun, as printed."""
    lines = output.splitlines()
    start = [i for i, line in enumerate(lines) if re.search(r"sweep \S+: \d+ jobs, best first", line)]
    assert len(start) == 1, output[-3000:]
    shared = lines[start[0] + 1]
    assert shared.startswith("every job: "), shared
    header, rule = lines[start[0] + 2], lines[start[0] + 3]
    columns = re.split(r"\s{2,}", header)
    assert columns[0] == "job" and columns[-3:] == ["objective", "duration_s", "status"], header
    assert set(rule) <= {"-", " "}, rule
    rows = []
    for line in lines[start[0] + 4:]:
        if not re.match(r"\d+\s", line):
            break
        rows.append(dict(zip(columns, re.split(r"\s{2,}", line.strip()))))
    return shared[len("every job: "):].split(), rows


def _assert_nothing_running(cli) -> None:
    running = [(r.info.run_name, r.data.tags.get("phase")) for r in cli.runs() if r.info.status == "RUNNING"]
    assert not running, running


# -- the grid, basic launcher -------------------------------------------------------------

@pytest.fixture(scope="module")
def grid(module_cli):
    return module_cli, _sweep(module_cli, *GRID)


def test_grid_runs_every_job_with_outputs_under_cwd_and_hydra_config_in_mlflow(grid, tmp_path):
    cli, proc = grid
    sweep, jobs, _ = _parts(cli)
    assert [r.data.tags["job_num"] for r in jobs] == ["0", "1", "2", "3"]
    combos = {(r.data.params["predictor.lr"], r.data.params["data.lookback_window"]) for r in jobs}
    assert combos == {("1e-05", "64"), ("1e-05", "128"), ("4e-05", "64"), ("4e-05", "128")}
    sweep_dir = _sweep_dir(cli)
    assert sweep_dir.is_relative_to(cli.root / "outputs")
    for job in jobs:
        num = job.data.tags["job_num"]
        local = sweep_dir / num / ".hydra"
        assert sorted(p.name for p in local.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
        logged = _download(cli, job.info.run_id, "config/hydra", tmp_path / num)
        assert sorted(p.name for p in logged.iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
        assert (logged / "overrides.yaml").read_text() == (local / "overrides.yaml").read_text()
        hydra_cfg = yaml.safe_load((logged / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["mode"] == "MULTIRUN" and str(hydra_cfg["job"]["num"]) == num
        output_dir = Path(hydra_cfg["runtime"]["output_dir"])
        assert output_dir == sweep_dir / num, (output_dir, sweep_dir)
        overrides = yaml.safe_load((logged / "overrides.yaml").read_text())
        assert f"predictor.lr={job.data.params['predictor.lr']}" in overrides
        assert f"data.lookback_window={job.data.params['data.lookback_window']}" in overrides
    assert "Launching 4 jobs locally" in _output(proc)


def test_grid_is_one_mlflow_tree(grid):
    cli, _ = grid
    sweep, jobs, phases = _parts(cli)
    sweep_id = sweep.data.tags["sweep_id"]
    assert sweep_id.startswith("sweep-") and sweep.info.run_name == sweep_id
    assert "mlflow.parentRunId" not in sweep.data.tags
    assert sweep.info.status == "FINISHED"
    assert len(jobs) == 4
    lrs = set()
    for job in jobs:
        tags, params, metrics = job.data.tags, job.data.params, job.data.metrics
        assert job.info.status == "FINISHED"
        assert tags["sweep_id"] == sweep_id
        assert tags["mlflow.runName"] == f"{sweep_id}-job-{tags['job_num']}"  # unique across sweeps
        # The swept overrides as a tag, and the whole config as params.
        assert f"predictor.lr={params['predictor.lr']}" in tags["overrides"].split()
        assert f"data.lookback_window={params['data.lookback_window']}" in tags["overrides"].split()
        assert params["tokenizer.arch.d_model"] == "32" and params["data.max_train_windows"] == "128"
        lrs.add(params["predictor.lr"])
        assert {"tokenizer_val_loss", "predictor_val_loss", "objective"} <= set(metrics)
        assert metrics["objective"] == pytest.approx(metrics["predictor_val_loss"])  # the default objective
        assert metrics["objective"] != pytest.approx(metrics["tokenizer_val_loss"])
        # Every phase run a child of its job.
        assert set(phases[job.info.run_id]) == {"tokenizer", "predictor"}
        for name, phase in phases[job.info.run_id].items():
            assert phase.info.status == "FINISHED"
            assert phase.data.tags["mlflow.parentRunId"] == job.info.run_id
            assert metrics[f"{name}_val_loss"] == pytest.approx(phase.data.metrics["best_val_loss"])
    assert lrs == {"1e-05", "4e-05"}


def test_grid_sweep_run_summarises_jobs_best_first(grid, tmp_path):
    cli, _ = grid
    sweep, jobs, _ = _parts(cli)
    objectives = {r.info.run_id: r.data.metrics["objective"] for r in jobs}
    best = min(jobs, key=lambda r: r.data.metrics["objective"])
    assert sweep.data.metrics["best_objective"] == pytest.approx(min(objectives.values()))
    assert sweep.data.tags["best_job"] == best.data.tags["job_num"]
    names = {a.path for a in cli.client().list_artifacts(sweep.info.run_id)}
    assert {"sweep_summary.txt", "sweep_summary.json"} <= names
    rows = json.loads(_download(cli, sweep.info.run_id, "sweep_summary.json", tmp_path).read_text())
    assert [r["run_id"] for r in rows] == sorted(objectives, key=objectives.get)
    assert [r["objective"] for r in rows] == pytest.approx(sorted(objectives.values()))
    assert all(r["status"] == "FINISHED" for r in rows)
    assert sorted(r["job"] for r in rows) == [0, 1, 2, 3]
    text = _download(cli, sweep.info.run_id, "sweep_summary.txt", tmp_path / "txt").read_text()
    assert re.match(r"every job: .*\njob\s+predictor.lr\s+data.lookback_window\s+objective\s+duration_s\s+status\n",
                    text), text


def test_grid_prints_the_job_table_sorted_by_objective(grid):
    cli, proc = grid
    sweep, jobs, _ = _parts(cli)
    output = _output(proc)
    shared, rows = _table(output)
    by_num = {r.data.tags["job_num"]: r for r in jobs}
    assert sorted(row["job"] for row in rows) == ["0", "1", "2", "3"]
    printed = [float(row["objective"]) for row in rows]
    assert printed == sorted(printed)
    # The swept parameters have a column each; what every job shares is printed once, above.
    assert shared[:len(SMALL)] == SMALL and not [o for o in shared if o.split("=")[0] in ("predictor.lr",
                                                                                          "data.lookback_window")]
    assert list(rows[0]) == ["job", "predictor.lr", "data.lookback_window", "objective", "duration_s", "status"]
    for row in rows:
        job = by_num[row["job"]]
        assert float(row["predictor.lr"]) == float(job.data.params["predictor.lr"])
        assert row["data.lookback_window"] == job.data.params["data.lookback_window"]
        objective = job.data.metrics["objective"]
        assert row["objective"] == f"{objective:.4g}"  # 4 significant digits
        assert float(row["duration_s"]) > 0 and row["status"] == "FINISHED"
    assert re.search(r"sweep sweep-\S+: 4 jobs, best first", output)
    assert "\x1b[" not in output  # no colour codes in output that is not a terminal
    view = (f"http://127.0.0.1:5000/#/experiments/{sweep.info.experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={sweep.data.tags['sweep_id']}")
    assert f"open the MLflow UI: mlflow ui --backend-store-uri {cli.tracking_uri}, then {view}" in output


def test_grid_trains_each_tokenizer_once(grid):
    cli, _ = grid
    _, jobs, phases = _parts(cli)
    # Two lookback windows = two data configs = two tokenizers; each trained once, reused once.
    assert len(cli.versions("kronos-tokenizer")) == 2
    assert len(cli.versions("kronos-predictor")) == 4
    for lookback in ("64", "128"):
        same = [j for j in jobs if j.data.params["data.lookback_window"] == lookback]
        skipped = sorted(phases[j.info.run_id]["tokenizer"].data.tags["skipped"] for j in same)
        assert skipped == ["false", "true"], lookback


# -- shared phases trained once -------------------------------------------------------------------


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _rendered(url: str, profile: Path) -> str:
    """The DOM of ``url`` after a real headless browser has run the page's JavaScript."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120).stdout


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium binary (Debian package chromium)")
def test_mlflow_ui_in_a_headless_browser_shows_one_sweep_of_four_jobs(grid, serve, tmp_path):
    cli, proc = grid
    sweep, jobs, _ = _parts(cli)
    url = serve(["ui", "--backend-store-uri", cli.tracking_uri], cli.root, cli.env())
    experiment, sweep_id = sweep.info.experiment_id, sweep.data.tags["sweep_id"]
    runs_page = _rendered(f"{url}/#/experiments/{experiment}/runs", tmp_path / "profile-runs")
    # Top level: the sweep run alone; its jobs and phases are nested under it.
    assert sweep.info.run_name in runs_page
    assert not re.search(rf">{sweep_id}-job-\d<", runs_page)
    # The page the sweep prints opens on the runs as model training, not on MLflow's GenAI overview,
    # with the sweep's four jobs, best first, and their objective as a column.
    printed = re.search(r"open the MLflow UI: mlflow ui .*, then http://127\.0\.0\.1:5000(/\S+viewStateShareKey=\S+)",
                        _output(proc))
    view = _rendered(url + printed.group(1), tmp_path / "profile-view")
    assert "<strong>4</strong> matching runs" in view
    for genai in ("Detect Issues", ">Overview<", "No data available"):
        assert genai not in view
    best_first = sorted(jobs, key=lambda j: j.data.metrics["objective"])
    assert [m.group(1) for m in re.finditer(rf">({sweep_id}-job-\d)<", view)] == [j.info.run_name for j in best_first]
    for job in jobs:
        assert f">{job.data.metrics['objective']!r}<" in view  # the metric column
        assert f">{job.data.params['data.lookback_window']}<" in view  # a swept parameter's column
    ids = urllib.parse.quote(json.dumps([j.info.run_id for j in jobs]))
    compare = _rendered(f"{url}/#/compare-runs?runs={ids}&experiments=%5B%22{experiment}%22%5D",
                        tmp_path / "profile-compare")
    assert "Comparing 4 Runs" in compare
    for job in jobs:
        assert f">{job.info.run_name}<" in compare
    for name in ("predictor.lr", "data.lookback_window", "objective", "predictor_val_loss"):
        assert name in compare
    assert len({j.data.metrics["objective"] for j in jobs}) == 4  # the metrics the view charts differ


def _assert_tokenizer_trained_once(cli) -> None:
    sweep, jobs, phases = _parts(cli)
    assert len(jobs) == 4 and sweep.info.status == "FINISHED"
    assert all(j.info.status == "FINISHED" for j in jobs)
    tokenizer_runs = [phases[j.info.run_id]["tokenizer"] for j in jobs]
    predictor_runs = [phases[j.info.run_id]["predictor"] for j in jobs]
    assert sorted(r.data.tags["skipped"] for r in tokenizer_runs) == ["false", "true", "true", "true"]
    assert [r.data.tags["skipped"] for r in predictor_runs] == ["false"] * 4
    tokenizers = cli.versions("kronos-tokenizer")
    assert len(tokenizers) == 1
    assert len(cli.versions("kronos-predictor")) == 4
    trained = next(r for r in tokenizer_runs if r.data.tags["skipped"] == "false")
    assert tokenizers[0].run_id == trained.info.run_id
    for r in tokenizer_runs:
        if r.data.tags["skipped"] == "true":
            assert r.data.tags["reused_version"] == "1" and r.data.tags["reused_run_id"] == trained.info.run_id
            assert "train_loss" not in r.data.metrics
    # Every predictor trained on that one tokenizer.
    fp = tokenizers[0].tags["fingerprint"]
    assert {r.data.tags["tokenizer_fingerprint"] for r in predictor_runs} == {fp}
    assert len({r.data.params["predictor.lr"] for r in jobs}) == 4


def _parquet_folder(folder: Path) -> None:
    """The bundled sample as a folder of Parquet files, one series per file, typed columns (the loading
    of CSV folders has its own tests in tests/data; this sweep runs the format quant data comes in)."""
    import pandas as pd

    from kronos_exp.data import sample_path

    folder.mkdir()
    for symbol, rows in pd.read_csv(sample_path(), parse_dates=["timestamps"]).groupby("symbol"):
        rows.drop(columns="symbol").to_parquet(folder / f"{symbol}.parquet", index=False)


DATA_FOLDERS = {"parquet": _parquet_folder}  # format -> writer of the sample as a folder of such files


@pytest.mark.parametrize("data_format", sorted(DATA_FOLDERS))
def test_lr_grid_trains_the_tokenizer_once_and_reads_the_data_once(cli, data_format):
    DATA_FOLDERS[data_format](cli.root / "prices")
    _sweep(cli, *LR_GRID, "data=csv", f"data.path={cli.root / 'prices'}")
    _assert_tokenizer_trained_once(cli)
    # Job 0 validated the files and cached the series; the later jobs read them from that cache.
    logs = [next(_sweep_dir(cli).glob(f"{num}/*.log")).read_text() for num in range(4)]
    (entry,) = (cli.root / "outputs" / "cache" / "series").iterdir()
    assert f"data: cached the validated series in {entry}" in logs[0] and "read from the cache" not in logs[0]
    for log in logs[1:]:
        assert f"data: read from the cache {entry} (3 series, " in log and "cached the validated" not in log


def test_parallel_jobs_share_the_store_and_train_the_tokenizer_once(cli):
    proc = _sweep(cli, "hydra/launcher=parallel", *LR_GRID)
    output = _output(proc)
    assert "database is locked" not in output.lower()
    assert re.search(r"Joblib.Parallel\(n_jobs=2.*launching 4 jobs", output), output[-3000:]
    _assert_tokenizer_trained_once(cli)
    _, jobs, phases = _parts(cli)
    # Jobs 0 and 1 really ran side by side, so one of them waited on the other's claim (tracking/claims.py).
    first, second = (phases[j.info.run_id]["tokenizer"] for j in jobs[:2])
    assert first.info.start_time < second.info.end_time and second.info.start_time < first.info.end_time, \
        "the first two jobs' tokenizer phases did not overlap: nothing exercised the claim"
    logs = "".join(p.read_text() for p in _sweep_dir(cli).glob("*/*.log"))
    assert "another job is producing fingerprint" in logs
    assert {(j.data.params["predictor.lr"]) for j in jobs} == {"0.001", "0.002", "0.003", "0.004"}
    # Each job's lines carry its number, and the table's duration is the job's own "done in".
    durations = {row["job"]: row["duration_s"] for row in _table(output)[1]}
    for num in range(4):
        log = next(_sweep_dir(cli).glob(f"{num}/*.log")).read_text()
        assert all(line.startswith(f"[job {num}][") for line in log.splitlines() if line.startswith("[")), log[:500]
        assert re.search(rf"^\[job {num}\]\[", output, re.M), output[-3000:]
        assert re.search(r"done in (\d+\.\d)s", log).group(1) == durations[str(num)]


def test_submitit_local_jobs_share_the_store_and_train_the_tokenizer_once(cli):
    _sweep(cli, "hydra/launcher=submitit_local", "predictor.lr=1e-3,2e-3")
    sweep, jobs, phases = _parts(cli)
    assert len(jobs) == 2 and {j.info.status for j in [sweep, *jobs]} == {"FINISHED"}
    assert sorted(phases[j.info.run_id]["tokenizer"].data.tags["skipped"] for j in jobs) == ["false", "true"]
    assert len(cli.versions("kronos-tokenizer")) == 1 and len(cli.versions("kronos-predictor")) == 2
    assert list(_sweep_dir(cli).glob(".submitit/*")), "the jobs did not go through submitit"


# -- Optuna ---------------------------------------------------------------------------------------

def test_optuna_search_reports_its_best_trial(cli):
    proc = _sweep(cli, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "objective=tokenizer_val_loss",
                  multirun=False)  # the config sets hydra.mode=MULTIRUN
    output = _output(proc)
    sweep, jobs, phases = _parts(cli)
    assert len(jobs) == 2 and sweep.info.status == "FINISHED"
    for job in jobs:
        metrics = job.data.metrics
        # objective=tokenizer_val_loss: the tokenizer phase's val loss, not the predictor's.
        assert metrics["objective"] == pytest.approx(metrics["tokenizer_val_loss"])
        assert metrics["objective"] == pytest.approx(phases[job.info.run_id]["tokenizer"].data.metrics["best_val_loss"])
        assert metrics["objective"] != pytest.approx(metrics["predictor_val_loss"])
    best = min(jobs, key=lambda r: r.data.metrics["objective"])
    assert len({j.data.params["tokenizer.lr"] for j in jobs}) == 2  # Optuna sampled two trials
    # What Optuna was returned, and reports as best, is that objective.
    results = yaml.safe_load((_sweep_dir(cli) / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best.data.metrics["objective"])
    assert results["best_params"]["tokenizer.lr"] == pytest.approx(float(best.data.params["tokenizer.lr"]))
    assert results["best_params"]["predictor.lr"] == pytest.approx(float(best.data.params["predictor.lr"]))
    assert "Best parameters" in output and "Best value" in output
    assert "\x1b[" not in output  # Optuna's log lines uncoloured in output that is not a terminal
    assert sweep.data.metrics["best_objective"] == pytest.approx(results["best_value"])
    assert sweep.data.tags["best_job"] == best.data.tags["job_num"]


def test_optuna_maximises_a_higher_is_better_objective(cli, tmp_path):
    """objective=eval_val_ic (a correlation): Optuna's study maximises it and the job table ranks the
    highest first (issue 17, defect 7)."""
    import optuna

    proc = _sweep(cli, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "phases=all", "objective=eval_val_ic",
                  "eval.windows=8", "eval.sample_count=1", "eval.pred_len=8", multirun=False)
    assert "Directions: ['maximize']" in _output(proc)
    study = optuna.load_study(study_name="kronos_exp", storage=f"sqlite:///{cli.root / 'optuna.db'}")
    assert study.direction.name == "MAXIMIZE"
    sweep, jobs, _ = _parts(cli)
    ics = [j.data.metrics["eval_val_ic"] for j in jobs]
    assert [j.data.metrics["objective"] for j in jobs] == pytest.approx(ics)
    assert len(jobs) == 2 and ics[0] != pytest.approx(ics[1])  # two values, so the order says something
    results = yaml.safe_load((_sweep_dir(cli) / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(ics))
    assert sweep.data.metrics["best_objective"] == pytest.approx(max(ics))
    rows = json.loads(_download(cli, sweep.info.run_id, "sweep_summary.json", tmp_path).read_text())
    assert [r["objective"] for r in rows] == pytest.approx(sorted(ics, reverse=True))


def test_optuna_minimises_the_bands_distance_from_calibrated(cli):
    """objective=eval_val_coverage_error (|coverage - 0.8|): minimised, so the study prefers the band
    nearer 80%, not the narrower one (raw coverage has no direction and is refused)."""
    import optuna

    proc = _sweep(cli, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "phases=all",
                  "objective=eval_val_coverage_error", "eval.windows=8", "eval.sample_count=4", "eval.pred_len=8",
                  multirun=False)
    assert "Directions: ['minimize']" in _output(proc)
    study = optuna.load_study(study_name="kronos_exp", storage=f"sqlite:///{cli.root / 'optuna.db'}")
    _, jobs, _ = _parts(cli)
    errors = [j.data.metrics["eval_val_coverage_error"] for j in jobs]
    assert errors == pytest.approx([abs(j.data.metrics["eval_val_coverage_10_90"] - 0.8) for j in jobs])
    assert study.best_value == pytest.approx(min(errors))


@pytest.mark.parametrize("objective, says", [
    ("eval_val_coverage_10_90", "use objective=eval_val_coverage_error, its distance from 80%, which is minimised"),
    ("eval_test_close_mae", "use the validation split's objective=eval_val_close_mae")])
def test_a_search_on_an_objective_it_cannot_use_is_refused_once_before_any_trial(cli, objective, says):
    import optuna

    proc = _sweep(cli, "hparams_search=optuna", "hydra.sweeper.n_trials=3", "phases=all", f"objective={objective}",
                  multirun=False, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and says in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # At most the sweep's own run, ended; no job ran, no trial was stored.
    assert all((r.data.tags.get("kind"), r.info.status) == ("sweep", "FAILED") for r in cli.runs())
    storage = cli.root / "optuna.db"
    assert not storage.exists() or not optuna.get_all_study_summaries(f"sqlite:///{storage}")


# -- a failing job ---------------------------------------------------------------------------------

@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=parallel"]], ids=["basic", "parallel"])
def test_failing_sweep_leaves_no_run_running(cli, launcher):
    # The tiny tokenizer has 4 + 4 bits: s1_bits=3 fails job 0 before it trains anything.
    proc = _sweep(cli, *launcher, "predictor.arch.s1_bits=3,4", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(r"^error: job 0: predictor s1_bits=3 .*s1_bits=4", proc.stderr, re.M), proc.stderr[-3000:]
    assert "error: 1 of 2 sweep jobs did not finish (jobs 0)" in proc.stderr
    sweep, jobs, phases = _parts(cli)
    # The failing job does not take the other one down: it runs to the end, in either launcher.
    assert len(jobs) == 2
    (good,) = [j for j in jobs if j.data.params.get("predictor.arch.s1_bits") == "4"]
    assert good.info.status == "FINISHED" and "objective" in good.data.metrics
    _assert_nothing_running(cli)
    assert sweep.info.status == "FAILED"
    failing = [j for j in jobs if "predictor.arch.s1_bits=3" in j.data.tags["overrides"]]
    assert len(failing) == 1 and failing[0].info.status == "FAILED"
    assert failing[0].data.tags["job_num"] == "0"
    assert "predictor s1_bits=3" in failing[0].data.tags["error"]
    assert phases[failing[0].info.run_id] == {}  # refused before its tokenizer phase started
