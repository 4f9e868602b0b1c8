"""kronos_exp: fine-tune Kronos on your own OHLCV data, every run tracked in MLflow."""

__version__ = "0.1.0"
