"""What the loop tests train: y = sum(x) learnt by a small model, and a fit that can be stopped at
a step (SIGTERM, as a user's Ctrl-C or a scheduler would) to test resuming. Torch only, so the
CUDA tests run on an image without MLflow or Hydra."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from kronos_exp.train import fit


class Regression:
    val_key = "loss"

    def loss(self, model, batch):
        x, y = batch
        return {"loss": nn.functional.mse_loss(model(x).float(), y)}

    def epoch_metrics(self, model, loader):
        return {}


def data(n: int, width: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, width, generator=g)
    return TensorDataset(x, x.sum(-1, keepdim=True))


def fit_stopping_at(model, s, train_set, val_set, stop_at_step=None, logged=None):
    """``fit`` with a SIGTERM sent at ``stop_at_step`` (acted on at that step's boundary); each
    log call's (step, metric names) is appended to ``logged`` when given."""
    def log_metrics(metrics, step):
        if logged is not None:
            logged.append((step, sorted(metrics)))
        if step == stop_at_step and "train_loss" in metrics:
            os.kill(os.getpid(), signal.SIGTERM)

    return fit(model, Regression(), train_set, val_set, s, log_metrics, on_best=lambda *a: None)


def end_rank() -> None:
    """End this torchrun rank once it has written its results: meet the other rank at a barrier (both
    are then past their last collective) and exit at once, leaving the gloo process group as it is.
    Tearing it down races the peer's own teardown (gloo aborted rank 1 of a finished script in CI),
    and that teardown is not what these tests check; the CLI's runs under torchrun close it."""
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def torchrun_two(script: str, folder: Path, timeout: float) -> None:
    """Run ``script`` (Python source) in ``folder`` as two gloo processes under ``torchrun``, one
    thread each; fails with their output unless both succeed."""
    path = folder / "two_ranks.py"
    path.write_text(script)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(path)], cwd=folder,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=timeout)
    written = sorted(p.name for p in folder.iterdir())  # which ranks got as far as writing their results
    assert proc.returncode == 0, f"files: {written}\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
