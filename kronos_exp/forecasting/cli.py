"""``python -m kronos_exp.forecasting model=models:/kronos-predictor/<v> data.path=prices.csv pred_len=24
out=forecast.csv``: forecast the end of each series in a CSV with a registered predictor, and write
the forecast (CSV) and a fan chart (PNG); ``python -m kronos_exp.forecasting verify models:/...``
checks a registered version's files instead (forecasting.verify), and ``python -m
kronos_exp.forecasting best [name=kronos-predictor] [tracking_uri=...]`` lists the best version of
each data set it was evaluated on: ``models:/kronos-predictor@best-<data key>``, with its data in
words (``@best`` alone is the best of the first data set evaluated). Settings are ``key=value`` words:

  model        models:/<name>/<version>, models:/<name>@<alias> (a data set's best: @best-<data key>)
               or a packaged predictor folder (required)
  data.<key>   how to read the CSV, as in training (data.path, data.symbol_column, data.column_map, ...)
  pred_len     steps to forecast (default 16)
  lookback     history rows used: those the model was trained to normalise over (its package's window;
               another value is refused); for a model packaged without one, default its max_context
  sample_count sampled paths (default 8): the CSV's bars and the chart's line are their mean (the point
               forecast the evaluation scores); > 1 adds their 10th/90th percentiles, close_q10/close_q90,
               and the band
  T, top_p, top_k, seed    sampling (defaults 1.0, 0.9, 0, 0: forecasting.generation's)
  freq         spacing of the future timestamps (default: each series' median step), e.g. 5min, 1D
  out          the CSV to write (default forecast.csv); the chart goes beside it as <out>.png
  raw          true: the model's raw bars; false (default): valid bars (forecasting.candles.valid_candles:
               high >= open, close >= low, volume and amount >= 0)
  tracking_uri the MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)
"""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

from ..errors import UserError, error_line
from .generation import T_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT

# lookback "": the packaged model's (resolve_lookback)
DEFAULTS = {"model": None, "pred_len": "16", "lookback": "", "sample_count": "8", "T": str(T_DEFAULT),
            "top_p": str(TOP_P_DEFAULT), "top_k": str(TOP_K_DEFAULT), "seed": "0", "freq": "", "out": "forecast.csv",
            "raw": "false", "tracking_uri": None}


class ForecastError(UserError):
    """A problem the user can fix: printed as one line, exit status 1."""


def parse(argv: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``key=value`` words -> (settings, data settings)."""
    settings, data = dict(DEFAULTS), {}
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep:
            raise ForecastError(f"'{word}' is not key=value; keys: {', '.join(DEFAULTS)}, data.<key>")
        if key.startswith("data."):
            data[key[len("data."):]] = value
        elif key in DEFAULTS:
            settings[key] = value
        else:
            raise ForecastError(f"unknown setting '{key}'; valid: {', '.join(DEFAULTS)}, data.<key> (e.g. data.path)")
    if not settings["model"]:
        raise ForecastError("model= is required, e.g. model=models:/kronos-predictor/1 or a predictor folder")
    if not data.get("path") and not data.get("paths"):
        raise ForecastError("data.path= is required: the CSV (or glob) whose series to forecast")
    return settings, data


def _number(settings: dict[str, str], key: str, kind=int, valid=lambda v: True, what: str = "") -> int | float:
    """Setting ``key`` as an int or a finite float that ``valid`` accepts (``what`` says which are)."""
    noun = "an integer" if kind is int else "a finite number"
    try:
        value = kind(settings[key])
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not valid(value):
        raise ForecastError(f"{key}={settings[key]}; valid: {noun}{' ' + what if what else ''}")
    return value


def sampling(settings: dict[str, str]) -> dict[str, int | float | None]:
    """The numeric settings, each checked against what the predictor can use (lookback None: the model's)."""
    return {
        "pred_len": _number(settings, "pred_len", int, lambda v: v >= 1, ">= 1"),
        "lookback": _number(settings, "lookback", int, lambda v: v >= 2, ">= 2") if settings["lookback"] else None,
        "sample_count": _number(settings, "sample_count", int, lambda v: v >= 1, ">= 1"),
        "T": _number(settings, "T", float, lambda v: v > 0, "> 0 (the sampling temperature)"),
        "top_p": _number(settings, "top_p", float, lambda v: 0 < v <= 1, "in (0, 1]"),
        "top_k": _number(settings, "top_k", int, lambda v: v >= 0, ">= 0 (0: no top-k cut)"),
        "seed": _number(settings, "seed", int),
    }


def resolve_lookback(asked: int | None, predictor, model: str) -> int:
    """The history rows to forecast from: the rows the model was trained to normalise over when its
    package records them (any other number would feed it inputs normalised unlike its training),
    else ``asked``, else the model's max_context."""
    trained = predictor.lookback
    if trained is None:
        return predictor.max_context if asked is None else asked
    if asked is not None and asked != trained:
        raise ForecastError(f"lookback={asked}, but model={model} was trained normalising over {trained} rows of "
                            f"history; leave lookback out (or set lookback={trained})")
    return trained


def raw_bars(settings: dict[str, str]) -> bool:
    """Setting ``raw``: whether to write the model's bars as they come (not made valid)."""
    value = settings["raw"].strip().lower()
    if value not in ("true", "false"):
        raise ForecastError(f"raw={settings['raw']}; valid: true (the model's raw bars) or false (valid bars)")
    return value == "true"


def check_freq(freq: str) -> None:
    if not freq:
        return
    import pandas as pd

    try:
        pd.tseries.frequencies.to_offset(freq)
    except ValueError:
        raise ForecastError(f"freq={freq} is not a pandas frequency; use e.g. freq=5min, 1h, 1D or 1W, or leave it "
                            "out for each series' median step") from None


def writable(out: Path) -> Path:
    """``out``, once it is certain the forecast can be written there (before any work is done)."""
    try:
        if out.is_dir():
            raise IsADirectoryError(21, "it is a folder", str(out))
        out.parent.mkdir(parents=True, exist_ok=True)
        existed = out.exists()
        out.open("a").close()
        if not existed:
            out.unlink()
    except OSError as err:
        where = f"{err.filename}: " if err.filename and err.filename != str(out) else ""
        raise ForecastError(f"cannot write out={out} ({where}{err.strerror}); choose a file name in a folder you "
                            "can write") from None
    return out


def load_model(uri: str, tracking_uri: str | None, download_to: Path):
    """The KronosPredictor inside a packaged predictor (registry URI or folder); a registered
    version's files are checked against its registered digests first, and nothing in it is run."""
    from ..model.checkpoint import CheckpointError, CheckpointNotFound
    from .packaged import load_predictor
    from .verify import download_version

    registered = None
    if uri.startswith("models:/"):
        try:
            version, folder = download_version(uri, tracking_uri, download_to)
        except CheckpointNotFound as err:  # "cannot load <uri> from <store>: <why>"
            hint = "; python -m kronos_exp.forecasting best lists each data set's best" if "@" in uri else ""
            raise ForecastError(str(err).replace(uri, f"model={uri}", 1) + hint) from None
        registered = version.tags
    elif Path(uri).is_dir():
        folder = Path(uri)
    else:
        raise ForecastError(f"model={uri}: no such folder; use models:/<name>/<version> or a predictor folder")
    try:
        return load_predictor(folder, registered)
    except (CheckpointError, CheckpointNotFound, OSError) as err:
        raise ForecastError(f"model={uri} is not a usable packaged kronos_exp predictor: {err}") from None


def _tables(series, y_ts, paths, sample_count: int, raw: bool):
    """One forecast table per series: the mean path (as valid bars unless ``raw``), the line the fan
    chart draws, and the band of the close when sampled."""
    import numpy as np
    import pandas as pd

    from ..data import FEATURES
    from ..metric_names import BAND
    from .candles import valid_candles
    from .package_layout import TIMESTAMP_COLUMN

    close = FEATURES.index("close")
    for s, stamps, p in zip(series, y_ts, paths):
        table = pd.DataFrame(p.mean(axis=0), columns=list(FEATURES))
        if not raw:
            table = valid_candles(table)
        if sample_count > 1:
            table["close_q10"], table["close_q90"] = np.quantile(p[:, :, close], BAND, axis=0)
        table.insert(0, TIMESTAMP_COLUMN, stamps)
        table.insert(0, "series", s.name)
        yield table


def _chart(path: Path, series, y_ts, paths, lookback: int, pred_len: int, model: str) -> None:
    """A fan chart per series, one under the other, as a PNG."""
    from ..data import FEATURES
    from .plots import fan_chart, figure

    close = FEATURES.index("close")
    fig = figure(figsize=(8, 3 * len(series)))
    axes = fig.subplots(len(series), 1, squeeze=False)
    for ax, s, p, stamps in zip(axes[:, 0], series, paths, y_ts):
        fan_chart(ax, s.values[-lookback:, close], p[:, :, close],
                  title=f"{s.name}: {model}, {pred_len} steps from {stamps[0]}", show_history=4 * pred_len)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def histories(series: list, lookback: int, freq: str) -> list:
    """The series as the forecast can use them: each with at least two rows unless ``freq`` says
    the spacing; one warning line for those shorter than ``lookback`` (their whole history is used)."""
    for s in series:
        if len(s.timestamps) < 2 and not freq:
            raise ForecastError(f"{s.source}: series '{s.name}' has {len(s.timestamps)} row; the spacing of its "
                                "forecast timestamps cannot be inferred from it: add rows, or set freq= (e.g. "
                                "freq=5min)")
    short = [s for s in series if len(s.timestamps) < lookback]
    if short:
        print(f"warning: lookback={lookback} is longer than the history of {len(short)} series ("
              + ", ".join(f"'{s.name}': {len(s.timestamps)} rows" for s in short[:5])
              + (", ..." if len(short) > 5 else "") + "); their whole history is used", file=sys.stderr)
    return series


def main(argv: list[str]) -> Path:
    settings, data_settings = parse(argv)
    n = sampling(settings)
    raw = raw_bars(settings)
    check_freq(settings["freq"])
    out = writable(Path(settings["out"]))

    import pandas as pd

    from ..data import FEATURES, load_series
    from ..train.state import seed_everything
    from .horizon import future_timestamps
    from .sampling import sample_paths

    with tempfile.TemporaryDirectory(prefix="kronos-forecast-") as download_to:
        predictor = load_model(settings["model"], settings["tracking_uri"], Path(download_to))
    lookback = resolve_lookback(n["lookback"], predictor, settings["model"])
    series = histories(load_series(data_settings), lookback, settings["freq"])  # DataError names the file
    pred_len, sample_count = n["pred_len"], n["sample_count"]
    frames = [pd.DataFrame(s.values[-lookback:], columns=list(FEATURES)) for s in series]
    x_ts = [pd.Series(s.timestamps[-lookback:]) for s in series]
    y_ts = [future_timestamps(pd.DatetimeIndex(s.timestamps[-lookback:]), pred_len, settings["freq"]) for s in series]
    seed_everything(n["seed"])
    paths = sample_paths(predictor, frames, x_ts, y_ts, pred_len, n["T"], n["top_k"], n["top_p"],
                         sample_count)  # [N, S, H, 6]

    chart = out.with_suffix(".png")
    try:
        pd.concat(_tables(series, y_ts, paths, sample_count, raw)).to_csv(out, index=False)
        _chart(chart, series, y_ts, paths, lookback, pred_len, settings["model"])
    except OSError as err:  # the disk filled up, or the folder changed, since writable() looked
        raise ForecastError(f"cannot write {err.filename or out} ({err.strerror}); choose a file name in a folder "
                            "you can write") from None
    print(f"wrote {out} ({len(series)} series x {pred_len} steps) and {chart}: {statistic(sample_count)}")
    return out


def statistic(sample_count: int) -> str:
    """What the CSV's bars and the chart's line are, in words."""
    if sample_count == 1:
        return "one sampled path"
    return f"the mean of {sample_count} sampled paths (close_q10/close_q90: their 10th/90th percentiles)"


def best_models(argv: list[str]) -> None:
    """``best [name=kronos-predictor] [tracking_uri=...]``: each data set's best version of ``name``
    (tracking.registry ``Registry.data_aliases``), one line each, for model=."""
    settings = {"name": "kronos-predictor", "tracking_uri": None}
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep or key not in settings:
            raise ForecastError(f"'{word}': best takes name=<registered model> and tracking_uri=<store>")
        settings[key] = value
    from ..tracking.registry import Registry
    from ..tracking.runs import bound_http_retries
    from ..tracking.uris import resolve_tracking_uri, sqlite_path

    store = resolve_tracking_uri(settings["tracking_uri"])
    database = sqlite_path(store)
    if database is not None and not database.is_file():
        raise ForecastError(f"no MLflow store at {store}; pass tracking_uri=<the store your runs used>")
    bound_http_retries(timeout_s=10, max_retries=0)  # a dead server fails now, not in minutes
    try:
        found = Registry.of_store(store).data_aliases(settings["name"])
    except Exception as err:  # no such model, a store that does not answer
        raise ForecastError(f"cannot list the aliases of {settings['name']} at {store}: "
                            f"{str(err).splitlines()[0]}") from None
    if not found:
        raise ForecastError(f"{settings['name']} at {store} has no data set's best yet: evaluate a predictor "
                            "(phases=eval or phases=all)")
    for a in found:
        also = "".join(f" (also @{name})" for name in a.also)
        print(f"models:/{settings['name']}@{a.alias} v{a.version}{also}  {a.description}")


def run(argv: list[str]) -> None:
    """The command (``verify ...``: forecasting.verify's; ``best ...``: the list of each data set's best):
    a user error is one line on stderr and exit status 1."""
    if argv[:1] == ["verify"]:
        from .verify import run as verify

        verify(argv[1:])
        return
    try:
        if argv[:1] == ["best"]:
            best_models(argv[1:])
        else:
            main(argv)
    except UserError as err:
        raise SystemExit(error_line(str(err))) from None
