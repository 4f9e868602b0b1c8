"""Evaluation, without tracking: forecast metrics, intervals and backtests (pure functions), the
evaluation itself (evaluation.evaluate: plain values in and out) and its figures (evaluation.plots).
The eval step that records it is kronos_exp.eval_step."""
