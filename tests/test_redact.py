"""URL passwords are masked (issue 27, item 7): the one function every console line, error line,
saved config file and MLflow record of a URL goes through (kronos_exp/redact.py)."""
from __future__ import annotations

import logging
import warnings

import pytest

from kronos_exp.errors import ConfigError, error_line, user_message
from kronos_exp.redact import mask_logs_and_warnings, mask_passwords


@pytest.mark.parametrize("given, shown", [
    ("postgresql://user:s3cret@db.internal:5432/optuna", "postgresql://user:***@db.internal:5432/optuna"),
    ("mysql+pymysql://u:p%40ss@h:3306/db?charset=utf8", "mysql+pymysql://u:***@h:3306/db?charset=utf8"),
    ("http://user:s3cret@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    # a raw "@" or "/" in the password: all of it, up to the host's "@", is masked
    ("postgresql://user:s3@cr/et@host/db", "postgresql://user:***@host/db"),
    # URLs in text: every one, each as written
    ("- hydra.sweeper.storage=postgresql://a:s3cret@h/db\n- mlflow.tracking_uri=http://b:s3cret@h:5000\n",
     "- hydra.sweeper.storage=postgresql://a:***@h/db\n- mlflow.tracking_uri=http://b:***@h:5000\n"),
    ("['mlflow.tracking_uri=http://u:s3cret@h:1', 'x=1']", "['mlflow.tracking_uri=http://u:***@h:1', 'x=1']"),
    # as Hydra prints a job's overrides (colons escaped), and as a list of them shows that
    (r"#0 : mlflow.tracking_uri=http\://user\:s3cret@127.0.0.1\:1",
     r"#0 : mlflow.tracking_uri=http\://user\:***@127.0.0.1\:1"),
    (r"['mlflow.tracking_uri=http\\://u\\:s3cret@h']", r"['mlflow.tracking_uri=http\\://u\\:***@h']"),
])
def test_the_password_of_every_url_is_masked(given, shown):
    assert mask_passwords(given) == shown


@pytest.mark.parametrize("text", [
    "sqlite:////abs/outputs/optuna.db", "sqlite:///outputs/mlflow.db", "postgresql://user@host/db",
    "http://127.0.0.1:5000/#/experiments/1", "predictor.lr=0.001 user@example.com", "a: b@c",
])
def test_text_without_a_password_is_left_as_it_is(text):
    assert mask_passwords(text) == text


def test_the_cli_error_lines_show_no_password():
    err = ConfigError("hydra.sweeper.storage=postgresql://user:s3cret@h/db: cannot open it")
    assert user_message(err) == "hydra.sweeper.storage=postgresql://user:***@h/db: cannot open it"
    assert error_line(str(err)) == "error: hydra.sweeper.storage=postgresql://user:***@h/db: cannot open it"


def test_log_records_and_warnings_are_masked_whatever_shows_them(caplog):
    factory, formatwarning = logging.getLogRecordFactory(), warnings.formatwarning
    try:
        mask_logs_and_warnings()
        installed = logging.getLogRecordFactory()
        mask_logs_and_warnings()  # every job calls it: one layer is enough
        assert logging.getLogRecordFactory() is installed is not factory
        with caplog.at_level(logging.INFO):
            logging.getLogger("hydra.some_launcher").info("\t#%d : %s", 0, "mlflow.tracking_uri=http://u:s3cret@h:1")
            logging.getLogger("any.library").warning("API request to http://u:s3cret@h:1/api failed")
        # as Hydra warns of a callback's error
        shown = warnings.formatwarning("Callback raised: no server answers at http://u:s3cret@h:1", UserWarning,
                                       "callbacks.py", 28)
    finally:
        logging.setLogRecordFactory(factory)
        warnings.formatwarning = formatwarning
    assert [r.getMessage() for r in caplog.records] == ["\t#0 : mlflow.tracking_uri=http://u:***@h:1",
                                                        "API request to http://u:***@h:1/api failed"]
    assert "no server answers at http://u:***@h:1" in shown and "s3cret" not in shown
