"""The loss-curve figure logged with each trained phase."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402


def log_loss_curve(phase: str, result) -> None:
    """Train loss against optimizer step, validation loss against epoch, side by side."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    if result.train_history:
        steps, losses = zip(*result.train_history)
        left.plot(steps, losses, marker=".")
    left.set(title=f"{phase}: train loss", xlabel="optimizer step", ylabel="loss")
    right.plot(range(1, len(result.val_history) + 1), result.val_history, marker="o", color="tab:orange")
    right.set(title=f"{phase}: validation loss", xlabel="epoch", ylabel="val_loss")
    fig.tight_layout()
    mlflow.log_figure(fig, f"plots/{phase}_loss_curve.png")
    plt.close(fig)
