"""Processes whose clocks disagree share one store and one study (issue 27, item 6): a second
process runs with its wall clock skewed (tests/e2e/skewed_clock.py) beside a first one on the real
clock. A claim is never taken from a live holder, so the phase is trained once; a search process
never fails another's running trial; and a search whose running trial another process ended
anyway stops that trial's job at its next epoch and goes on to its next trial, exit 0."""
from __future__ import annotations

import subprocess
import time

import optuna
import pytest

from skewed_clock import skewed_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLAIMING = ["phases=tokenizer", "skip_existing=true", "mlflow.heartbeat_s=1", "checkpoint_every_steps=1",
            "data.max_train_windows=64", "data.max_eval_windows=16", "tokenizer.batch_size=8", "tokenizer.epochs=25"]
SEARCH = ["hparams_search=optuna", "phases=tokenizer", "data.max_train_windows=64", "data.max_eval_windows=16",
          "hydra.sweeper.params=null", "tokenizer.lr=tag(log, interval(1e-4, 1e-2))", "hydra.sweeper.pruner=none",
          "hydra.sweeper.heartbeat_s=1"]


def _start(cli, command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cli.root, env={**cli.env(), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _until(done, procs: list[subprocess.Popen], timeout: float = 120):
    """Poll ``done()`` until it returns something truthy, while every process still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, p.stdout.read()[-3000:]
        try:
            found = done()
        except Exception:  # the database, its tables or the study not created yet
            found = None
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def _finish(procs: list[subprocess.Popen]) -> list[str]:
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0] * len(procs), [o[-3000:] for o in outputs]
    assert not [o for o in outputs if "Traceback" in o], outputs
    return outputs


def _trials(cli, study: str):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{cli.root / 'optuna.db'}").get_trials()


@pytest.mark.parametrize("skew_s", [60, -60])
def test_a_host_with_a_skewed_clock_waits_for_a_live_claim_and_reuses_it(cli, skew_s):
    """Ahead, the second host saw the first one's heartbeat a minute old and took its claim over;
    behind, its claim looked the earlier and it trained beside the first."""
    first = _start(cli, cli.command(*CLAIMING, fast=False))

    def training():
        return [r for r in cli.runs() if r.data.tags.get("phase") == "tokenizer" and r.data.tags.get("last_state")]
    _until(training, [first])
    second = _start(cli, skewed_command(skew_s, *CLAIMING, f"mlflow.tracking_uri={cli.tracking_uri}"))
    outputs = _finish([first, second])
    assert len(cli.versions("kronos-tokenizer")) == 1  # trained once
    assert "another job is producing fingerprint" in outputs[1]
    runs = [r for r in cli.runs() if r.data.tags.get("phase") == "tokenizer"]
    assert sorted(r.data.tags["skipped"] for r in runs) == ["false", "true"]


def test_a_search_process_with_a_skewed_clock_leaves_the_other_ones_trials_alone(cli):
    """Ten minutes ahead, the second process took the first for dead: it failed the first's
    running trial, and the first then crashed telling it (``Cannot tell a FAIL trial``)."""
    first = _start(cli, cli.command(*SEARCH, "hydra.sweeper.study_name=skew", "hydra.sweeper.n_trials=2",
                                    "tokenizer.epochs=12", fast=False))
    _until(lambda: [t for t in _trials(cli, "skew") if t.state.name == "RUNNING"], [first])
    second = _start(cli, skewed_command(600, *SEARCH, "hydra.sweeper.study_name=skew", "hydra.sweeper.n_trials=1",
                                        "tokenizer.epochs=2", f"mlflow.tracking_uri={cli.tracking_uri}"))
    _finish([first, second])
    trials = _trials(cli, "skew")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # each ran its own n_trials, none failed
    workers = {t.user_attrs["kronos_worker"] for t in trials}
    assert len(workers) == 2
    # The second one's clock was skewed for Optuna's stamps as well: its trial started "ten minutes later".
    starts = sorted(t.datetime_start for t in trials)
    assert (starts[-1] - starts[0]).total_seconds() > 500


def test_a_search_whose_running_trial_another_process_ended_goes_on_to_its_next(cli):
    search = _start(cli, cli.command(*SEARCH, "hydra.sweeper.study_name=taken", "hydra.sweeper.n_trials=2",
                                     "tokenizer.epochs=12", fast=False))
    storage = f"sqlite:///{cli.root / 'optuna.db'}"
    _until(lambda: [t for t in _trials(cli, "taken") if "mlflow_run_id" in t.user_attrs], [search])
    optuna.load_study(study_name="taken", storage=storage).tell(0, state=optuna.trial.TrialState.FAIL)
    [out] = _finish([search])
    taken = "trial 0 of study 'taken' was ended FAIL by another search process (its heartbeat looked stalled)"
    assert len([line for line in out.splitlines() if f"{taken}; its result is not recorded" in line]) == 1
    assert [t.state.name for t in _trials(cli, "taken")] == ["FAIL", "COMPLETE"]
    [job] = [r for r in cli.runs() if r.data.tags.get("optuna_study") == "taken" and r.data.tags["optuna_trial"] == "0"]
    assert job.info.status == "KILLED" and job.data.tags["stopped"].startswith(taken)  # stopped at its next epoch
    assert job.data.tags["taken_over"] == "true" and "pruned" not in job.data.tags
