"""Evaluation: forecast metrics (pure functions) and the eval step (evaluation.step.EvalStep)."""
