"""KronosPredictor: forecast OHLCV DataFrames with a tokenizer + predictor pair (the pandas adapter
over model.generation, with the published Kronos interface)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import torch

from ..data import FEATURES, PRICE_COLUMNS, lookback_denormalize, lookback_normalize, time_features, volume_and_amount
from ..model import Kronos, KronosTokenizer
from ..window import WindowSpec
from .generation import T_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT, generate

COLUMNS = list(FEATURES)  # the forecast's columns, in the model's input order


class KronosPredictor:
    """Forecast OHLCV DataFrames with a tokenizer + predictor pair.

    Each series is normalised with its own history's mean and std, forecast in token space and
    mapped back to prices. Fill rules: no ``volume`` column -> volume and amount are 0; no
    ``amount`` column -> volume x mean(open, high, low, close). NaNs are an error.

    The constructor is the published one (clip 5, max_context 512, the whole history given);
    ``lookback`` (None: the whole history) cuts each history to its last ``lookback`` rows before
    normalising, the rows a fine-tuned model's training windows normalised over. A fine-tuned
    model's forecasts should come from ``from_window`` with the window it was trained with.
    """

    def __init__(self, model: Kronos, tokenizer: KronosTokenizer, device: str | None = None,
                 max_context: int = WindowSpec.max_context, clip: float = WindowSpec.clip,
                 lookback: int | None = None):
        if lookback is not None and lookback < 1:
            raise ValueError(f"lookback={lookback}; valid: an integer >= 1, or None for the whole history")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer.to(self.device).eval()
        self.max_context = max_context
        self.clip = clip
        self.lookback = lookback

    @classmethod
    def from_window(cls, model: Kronos, tokenizer: KronosTokenizer, window: WindowSpec,
                    device: str | None = None) -> "KronosPredictor":
        """A predictor that normalises as the model was trained to see: ``window``'s clip, lookback
        and max_context."""
        return cls(model, tokenizer, device=device, max_context=window.max_context, clip=window.clip,
                   lookback=window.lookback)

    def _prepare(self, df: pd.DataFrame, x_timestamp, y_timestamp, pred_len: int, label: str):
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"{label}: df must be a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in PRICE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{label}: df lacks price columns {missing}; it needs {list(PRICE_COLUMNS)} "
                             f"(volume and amount are optional), it has {list(df.columns)}")
        if len(df) == 0:
            raise ValueError(f"{label}: df is empty")
        if len(x_timestamp) != len(df):
            raise ValueError(f"{label}: x_timestamp has {len(x_timestamp)} entries but df has {len(df)} rows")
        if len(y_timestamp) != pred_len:
            raise ValueError(f"{label}: y_timestamp has {len(y_timestamp)} entries but pred_len={pred_len}")
        x_timestamp = pd.Series(pd.to_datetime(x_timestamp))
        if self.lookback is not None and len(df) > self.lookback:  # the rows training normalised over
            df, x_timestamp = df.iloc[-self.lookback:], x_timestamp.iloc[-self.lookback:]
        df = df.copy()
        df["volume"], df["amount"] = volume_and_amount(df, len(df))
        values = df[COLUMNS].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            rows, cols = np.nonzero(bad)
            where = ", ".join(f"{COLUMNS[c]}@row {r}" for r, c in list(zip(rows, cols))[:5])
            raise ValueError(f"{label}: df has {int(bad.sum())} NaN/inf values ({where}); fill or drop them first")
        # float32 statistics, as the published KronosPredictor computes them (its forecasts are
        # matched exactly); training windows use float64 (data.windows.lookback_normalize).
        x, mean, std = lookback_normalize(values, len(values), self.clip, dtype=np.float32)
        x_stamp = time_features(x_timestamp)
        y_stamp = time_features(pd.Series(pd.to_datetime(y_timestamp)))
        return x, x_stamp, y_stamp, mean, std

    def predict_batch(self, df_list, x_timestamp_list, y_timestamp_list, pred_len: int, T: float = T_DEFAULT,
                      top_k: int = TOP_K_DEFAULT, top_p: float = TOP_P_DEFAULT, sample_count: int = 1,
                      verbose: bool = True):
        """Forecast several series; series with the same history length share one batch."""
        return self.forecast_batch(df_list, x_timestamp_list, y_timestamp_list, pred_len, T, top_k, top_p,
                                   sample_count, verbose)

    def forecast_batch(self, df_list, x_timestamp_list, y_timestamp_list, pred_len: int, T: float = T_DEFAULT,
                       top_k: int = TOP_K_DEFAULT, top_p: float = TOP_P_DEFAULT, sample_count: int = 1,
                       verbose: bool = True, generator: torch.Generator | None = None, stop=None):
        """predict_batch (whose signature is the published one) with generation.generate's ``generator``
        (a request's own random stream) and ``stop`` (when to give up)."""
        if not (len(df_list) == len(x_timestamp_list) == len(y_timestamp_list)):
            raise ValueError(f"df_list, x_timestamp_list and y_timestamp_list differ in length: "
                             f"{len(df_list)}, {len(x_timestamp_list)}, {len(y_timestamp_list)}")
        if pred_len < 1:
            raise ValueError(f"pred_len must be >= 1, got {pred_len}")
        prepared = [self._prepare(df, xt, yt, pred_len, f"series {i}")
                    for i, (df, xt, yt) in enumerate(zip(df_list, x_timestamp_list, y_timestamp_list))]
        by_length = defaultdict(list)
        for i, p in enumerate(prepared):
            by_length[len(p[0])].append(i)
        forecasts = [None] * len(prepared)
        for indices in by_length.values():
            def stack(j):
                return torch.from_numpy(np.stack([prepared[i][j] for i in indices])).to(self.device)
            normalised = generate(self.tokenizer, self.model, stack(0), stack(1), stack(2), pred_len,
                                  self.max_context, self.clip, T, top_k, top_p, sample_count, verbose,
                                  generator=generator, stop=stop)
            for i, pred in zip(indices, normalised.float().cpu().numpy()):
                mean, std = prepared[i][3], prepared[i][4]
                forecasts[i] = pd.DataFrame(lookback_denormalize(pred, mean, std), columns=COLUMNS,
                                            index=pd.DatetimeIndex(pd.to_datetime(y_timestamp_list[i])))
        return forecasts

    def predict(self, df: pd.DataFrame, x_timestamp, y_timestamp, pred_len: int, T: float = T_DEFAULT,
                top_k: int = TOP_K_DEFAULT, top_p: float = TOP_P_DEFAULT, sample_count: int = 1,
                verbose: bool = True) -> pd.DataFrame:
        """Forecast one series: a DataFrame of open/high/low/close/volume/amount indexed by y_timestamp."""
        return self.predict_batch([df], [x_timestamp], [y_timestamp], pred_len, T, top_k, top_p,
                                  sample_count, verbose)[0]
