"""Every command the manual shows (README.md and docs/: the lines of its ``sh`` blocks, and the
``$ `` lines of its output blocks) is run by a test: each ``python -m kronos_exp <overrides>`` is
composed here, as the CLI would compose it (so a renamed or misspelt setting on a page fails), and
every other command names the test (or CI step) that runs it, in RUN_BY. A command a page gains
fails here until it is given one."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness import compose, manual_pages

ROOT = Path(__file__).resolve().parents[2]

# (the command, as a regular expression; the file that runs it; a string that file holds where it does)
RUN_BY = [
    # The README's install and tests, verbatim, in a brand-new venv (docs/index.md's install is the same).
    (r"pip install torch==\S+ && pip install -e \"\.\[dev,postgres\]\"( && python -m kronos_exp phases=both)?",
     ".ci/run", "ci:install"),
    (r"python -m pytest -q -n 2", ".ci/run", "ci:test"),
    (r'python -m pytest -q -m "not slow and not e2e"', "tests/docs/test_commands.py", "def test_the_quick_pass"),
    (r"mlflow ui --backend-store-uri sqlite:///outputs/mlflow\.db", "tests/e2e/test_cli.py",
     "def test_readme_ui_command_serves_a_shared_tracking_server"),
    (r"mkdocs serve", "tests/docs/test_site.py", "def test_mkdocs_serve_serves_the_manual"),
    (r"mkdocs build --strict", "tests/docs/test_site.py", '"build", "--strict"'),
    (r"python benchmarks/bench_verdicts\.py .*", "tests/evaluation/test_bench_verdicts.py", "bench_verdicts.py"),
    (r"python benchmarks/bench_train\.py", "tests/train/test_bench_train.py", "bench_train.py"),
    (r"python benchmarks/bench_generate\.py --repeats 5( --max-context 2048)?", "tests/model/test_bench_generate.py",
     "bench_generate.py"),
    # The CUDA figures: benchmarks/gpu_check.sh runs it on a GPU machine (no GPU here or in CI).
    (r"python benchmarks/bench_generate\.py --device cuda .*", "benchmarks/gpu_check.sh", "bench_generate.py"),
    (r"python benchmarks/bench_config_p\.py .*", "tests/docs/test_benchmarks.py", "bench_config_p.py"),
    (r"python benchmarks/bench_dataset\.py .*", "tests/docs/test_benchmarks.py", "bench_dataset.py"),
    (r"python benchmarks/busy_machine\.py .*", "tests/docs/test_benchmarks.py", "busy_machine.py"),
    (r"MLFLOW_TRACKING_URI=\S+ UVICORN_HTTP=\S+ mlflow models serve .*", "tests/e2e/test_serving_limits.py",
     "kronos_exp.forecasting.body_limit:BodyLimitedH11"),
    (r"curl -s -X POST http://127\.0\.0\.1:5001/invocations .*", "tests/e2e/test_served_model.py", "/invocations"),
    (r"python -m kronos_exp\.forecasting verify \S+", "tests/forecasting/test_verify.py", "manual_text()"),
    (r"python -m kronos_exp\.forecasting model=models:/kronos-predictor/1 data\.path=prices\.csv pred_len=24 "
     r"out=forecast\.csv", "tests/e2e/test_eval.py", '"pred_len=24", "out=forecast.csv"'),
    (r"head -3 forecast\.csv", "tests/e2e/test_eval.py", '"close_q10", "close_q90"'),
    (r"python -m kronos_exp\.forecasting model=models:/kronos-predictor/9 .*", "tests/e2e/test_eval.py",
     "model=models:/kronos-predictor/9"),
    (r"python -m kronos_exp\.forecasting model=models:/kronos-predictor/1 data\.path=prices\.csv freq=banana",
     "tests/forecasting/test_forecast_cli.py", "freq=banana"),
    (r"python -m kronos_exp\.forecasting model=models:/kronos-predictor@best-\S+ .*",
     "tests/evaluation/test_best_per_data.py", 'f"model=models:/{NAME}@{hourly_alias}"'),
    (r"python -m kronos_exp\.forecasting best", "tests/evaluation/test_best_per_data.py",
     'forecast_command(tmp_path, "best"'),
    (r"torchrun --standalone --nproc_per_node=2 -m kronos_exp .*", "tests/e2e/test_distributed.py",
     '"--standalone", "--nproc_per_node=2"'),
    (r"mlflow server --host 0\.0\.0\.0 --port 5000 --backend-store-uri postgresql://\S+ --artifacts-destination \S+",
     "tests/e2e/test_postgres.py", '"--artifacts-destination"'),
    (r"chromium --headless .*", "tests/e2e/test_screenshot.py", "--virtual-time-budget"),
    (r"optuna (study-names|trials|best-trial) --storage sqlite:///outputs/optuna\.db.*",
     "tests/docs/test_optuna_study.py", 'names, trials, best = _commands("optuna ")'),
    (r"optuna-dashboard sqlite:///outputs/optuna\.db", "tests/docs/test_optuna_study.py", "optuna-dashboard"),
]

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```$", re.M | re.S)


def shown_commands(text: str) -> list[str]:
    """The commands of a page: each line of its ``sh`` blocks (continuation lines joined, comments
    dropped) and each ``$ `` line of its ``text`` blocks."""
    out = []
    for block in FENCE.finditer(text):
        lines = [line[len(block["indent"]):] for line in block["body"].splitlines()]
        if block["lang"] == "sh":
            command = ""
            for line in lines:
                command = f"{command} {line.strip()}".strip()
                if command.endswith("\\"):
                    command = command[:-1].rstrip()
                    continue
                command = re.sub(r"\s+#.*$", "", command).strip()
                if command and not command.startswith("#"):
                    out.append(command)
                command = ""
        elif block["lang"] == "text":
            rest = iter(lines)
            for line in rest:
                if line.startswith("$ "):
                    command = line[2:]
                    while command.rstrip().endswith("\\"):
                        command = command.rstrip()[:-1].rstrip() + " " + next(rest).strip()
                    out.append(re.sub(r"\s+#.*$", "", command).strip())
    return out


def _all_commands() -> list[tuple[str, str]]:
    return [(page, command) for page, text in manual_pages().items() for command in shown_commands(text)]


COMMANDS = _all_commands()
KRONOS = sorted({c for _, c in COMMANDS if re.match(r"python -m kronos_exp(\s|$)", c)})


def test_the_manual_shows_commands():
    assert len(COMMANDS) > 60 and len(KRONOS) > 30


@pytest.mark.parametrize("command", KRONOS)
def test_each_kronos_exp_command_shown_composes(command):
    """Hydra composes the command's overrides against the real config groups and schemas: an
    unknown key, a missing group option or a value of the wrong type fails, as the CLI would before
    any work. A sweep (``a,b``) is composed with its first value; an Optuna search space
    (``choice(...)``, ``interval(...)``) only has its key checked."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    args = [a for a in shlex.split(command)[3:] if a not in ("-m", "--multirun")]
    assert not [a for a in args if a.startswith("-")], f"a flag this test does not know: {command}"
    overrides, searched = [], []
    for override in OverridesParser.create().parse_overrides(args):
        if not override.is_sweep_override():
            overrides.append(override.input_line)
        elif override.value_type == ValueType.SIMPLE_CHOICE_SWEEP:
            first = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{override.get_key_element()}={first}")
        else:
            searched.append(override.key_or_group)
    cfg = compose(*overrides)
    for key in searched:
        assert OmegaConf.select(cfg, key) is not None, f"{key} is searched but not a setting"


@pytest.mark.parametrize("page, command", [pc for pc in COMMANDS if pc[1] not in KRONOS])
def test_every_other_command_shown_is_run_by_a_test(page, command):
    matches = [(path, evidence) for pattern, path, evidence in RUN_BY if re.fullmatch(pattern, command)]
    assert matches, f"{page} shows a command no test runs: {command!r} (give it one in RUN_BY)"
    for path, evidence in matches:
        assert evidence in (ROOT / path).read_text(), f"{path} does not hold {evidence!r} ({command})"


def test_each_test_named_in_run_by_is_there():
    for _, path, evidence in RUN_BY:
        assert evidence in (ROOT / path).read_text(), (path, evidence)


def test_the_quick_pass_selects_tests_by_declared_marks(pytestconfig):
    """``python -m pytest -q -m "not slow and not e2e"`` (docs/development.md): its marks are
    declared, and the expression selects tests (collected here, on this folder)."""
    assert {"slow", "e2e"} <= {m.split(":")[0] for m in pytestconfig.getini("markers")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "not slow and not e2e", "tests/docs"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\d+(/\d+)? tests? collected", proc.stdout), proc.stdout[-2000:]


def test_the_team_search_shown_is_the_one_the_postgres_test_runs():
    """docs/clusters.md's search for the team is tests/e2e/test_postgres.py's (with its storage and
    server URLs pointing at the test's PostgreSQL and ``mlflow server``)."""
    import ast

    source = (ROOT / "tests" / "e2e" / "test_postgres.py").read_text()
    search = next(ast.literal_eval(node.value) for node in ast.parse(source).body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SEARCH")
    (shown,) = [shlex.split(c)[3:] for c in KRONOS if "hydra.sweeper.study_name=team-lr" in c]
    assert set(search) <= set(shown)
    assert {a.split("=")[0] for a in shown} - {a.split("=")[0] for a in search} == {
        "hydra.sweeper.storage", "mlflow.tracking_uri"}
