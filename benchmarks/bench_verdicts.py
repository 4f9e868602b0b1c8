"""How often the eval step's verdicts say "better" or "worse" when nothing differs: the false-verdict
rate (the test's size) at the origin counts the defaults give.

    python benchmarks/bench_verdicts.py [--replications 4000]

Each replication draws null loss differentials d (mean 0) for n dates x N series, builds forecasts
whose per-origin absolute errors differ by exactly d (the model's error 10 + d, the reference's 10,
horizon 1), and passes them through the product's own comparison (evaluation.comparisons.compare:
per-date averaging, Diebold–Mariano with HLN and t(n-1)). A rate near the nominal 5% means a
verdict can be read at its word. Cells:

- single series at 9, 11, 27 and 32 dates (a daily stock, one HK 5-minute file, hourly FX, the
  bundled sample's 3 x 10 counted as one series); panels 3 x 10 and 8 x 4 (eval.windows=32);
- independent differentials; AR(1) over dates with phi = 0.5 (regimes that persist across
  non-overlapping origins); cross-sectional correlation 0.5 between the series at each date;
- overlapping origins (eval.overlap=true) with the horizon steps neighbours share as the lag:
  MA(lag) differentials at lag 1 and 3.
"""
from __future__ import annotations

import argparse

import numpy as np

from kronos_exp.evaluation.comparisons import Dates, Forecasts, compare
from kronos_exp.metric_names import BETTER, TOO_FEW, WORSE

CELLS = [(9, 1), (11, 1), (27, 1), (32, 1), (10, 3), (4, 8)]
DEPENDENCE = ["independent", "AR(1) phi=0.5", "cross-section rho=0.5"]


def null_differentials(rng: np.random.Generator, dates: int, series: int, dependence: str) -> np.ndarray:
    """[dates, series] loss differentials with mean 0 and the named dependence."""
    z = rng.normal(size=(dates, series))
    if dependence.startswith("AR(1)"):
        for t in range(1, dates):
            z[t] = 0.5 * z[t - 1] + np.sqrt(1 - 0.25) * z[t]
    if dependence.startswith("cross-section"):
        z = np.sqrt(0.5) * rng.normal(size=(dates, 1)) + np.sqrt(0.5) * z
    if dependence.startswith("MA"):
        lag = int(dependence.split("(")[1].rstrip(")"))
        e = rng.normal(size=(dates + lag, series))
        z = sum(e[k:k + dates] for k in range(lag + 1))
    return z


def verdict(d: np.ndarray, lag: int) -> str:
    """The product's verdict on differentials d [dates, series]."""
    dates, series = d.shape
    days = np.datetime64("2024-01-01", "ns") + np.arange(dates).astype("timedelta64[D]")
    of_origin = np.repeat(days, series)
    actual = np.zeros((dates * series, 1))
    model = Forecasts(actual + 10 + d.reshape(-1, 1))
    reference = Forecasts(actual + 10)
    (comparison,) = compare("close_mae", model, {"reference": reference}, actual, np.ones(dates * series),
                            Dates(of_origin, lag))
    return comparison.verdict


def rate(rng: np.random.Generator, dates: int, series: int, dependence: str, replications: int, lag: int = 0) -> str:
    verdicts = [verdict(null_differentials(rng, dates, series, dependence), lag) for _ in range(replications)]
    if all(v == TOO_FEW for v in verdicts):
        return "too few"
    return f"{np.mean([v in (BETTER, WORSE) for v in verdicts]):.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"false-verdict rate at a nominal 5%, {args.replications} replications per cell")
    print(f"{'dates x series':<15}" + "".join(f"{d:>24}" for d in DEPENDENCE))
    for dates, series in CELLS:
        cells = [rate(rng, dates, series, d, args.replications) if series > 1 or not d.startswith("cross") else "-"
                 for d in DEPENDENCE]
        print(f"{f'{dates} x {series}':<15}" + "".join(f"{c:>24}" for c in cells))
    print("overlapping origins, MA(lag) differentials tested at that lag:")
    for lag in (1, 3):
        for dates in (27, 32):
            print(f"  {dates} dates, lag {lag}: {rate(rng, dates, 1, f'MA({lag})', args.replications, lag)}")


if __name__ == "__main__":
    main()
