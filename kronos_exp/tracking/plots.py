"""Figures on phase runs: the loss curve of a trained phase, and any figure drawn elsewhere (the
eval step's: kronos_exp.evaluation.plots) logged as a PNG artifact of the active run."""
from __future__ import annotations

import mlflow


def log_figure(fig, name: str) -> None:
    """``fig`` (a matplotlib Figure) as the artifact ``name`` (e.g. plots/fan_ACME.png) of the active run."""
    mlflow.log_figure(fig, name)


def log_loss_curve(phase: str, result) -> None:
    """Train loss against optimizer step, validation loss against epoch, side by side."""
    from matplotlib.figure import Figure  # imported by the first curve drawn: reused phases draw none

    fig = Figure(figsize=(10, 3.5))
    left, right = fig.subplots(1, 2)
    if result.train_history:
        steps, losses = zip(*result.train_history)
        left.plot(steps, losses, marker=".")
    left.set(title=f"{phase}: train loss", xlabel="optimizer step", ylabel="loss")
    right.plot(range(1, len(result.val_history) + 1), result.val_history, marker="o", color="tab:orange")
    right.set(title=f"{phase}: validation loss", xlabel="epoch", ylabel="val_loss")
    fig.tight_layout()
    log_figure(fig, f"plots/{phase}_loss_curve.png")
