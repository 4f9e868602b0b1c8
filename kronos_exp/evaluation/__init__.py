"""Evaluation: forecast metrics (pure functions) and sampled forecasts of test windows."""
