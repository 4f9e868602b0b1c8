"""Sampled forecast paths through KronosPredictor, for bands and probabilistic metrics.

``KronosPredictor.predict(..., sample_count=S)`` returns the mean of S sampled paths; asking for
each series S times with ``sample_count=1`` returns the paths themselves (the same computation,
one batch), so quantiles and CRPS can be taken and their mean is the usual point forecast.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .generation import T_DEFAULT, TOP_K_DEFAULT, TOP_P_DEFAULT
from .predictor import COLUMNS, KronosPredictor


def sample_paths(predictor: KronosPredictor, frames: list[pd.DataFrame], x_timestamps: list, y_timestamps: list,
                 pred_len: int, T: float = T_DEFAULT, top_k: int = TOP_K_DEFAULT, top_p: float = TOP_P_DEFAULT,
                 sample_count: int = 1) -> np.ndarray:
    """Forecast paths [W, S, pred_len, 6] (COLUMNS order, price units) for W histories."""
    def repeat(items):
        return [item for item in items for _ in range(sample_count)]

    forecasts = predictor.predict_batch(repeat(frames), repeat(x_timestamps), repeat(y_timestamps), pred_len,
                                        T=T, top_k=top_k, top_p=top_p, sample_count=1, verbose=False)
    paths = np.stack([f[COLUMNS].to_numpy(dtype=np.float64) for f in forecasts])
    return paths.reshape(len(frames), sample_count, pred_len, len(COLUMNS))
