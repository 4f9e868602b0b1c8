"""``python -m kronos_exp``: compose the config with Hydra and run the pipeline."""
import contextlib
import sys
from pathlib import Path

from . import collector

if __name__ == "__main__":  # run as the program: the imports below run without the collector's passes
    collector.pause_for_imports()

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from .config import register_configs  # noqa: E402

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # also reachable as ./conf in a checkout

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | list[float] | None:
    # Heavy imports (torch, mlflow) only once Hydra has parsed the command line: --help stays quick.
    from .errors import TrialPruned, UserError, error_line, user_message
    from .pipeline import run

    collector.imports_done()
    hydra_cfg = HydraConfig.get()
    try:
        return run(cfg, Path(hydra_cfg.runtime.output_dir))
    except TrialPruned as pruned:  # the sweep goes on; Optuna already holds the trial as pruned
        print(f"job {hydra_cfg.job.num}: {pruned}", file=sys.stderr)
        return None
    except (UserError, OSError) as err:
        message = user_message(err)
        if message is None:  # an OSError that is no user's doing: a bug, with its traceback
            raise
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # One bad job must not take down the jobs beside it: report it, let the sweep go on.
            # The sweep's summary lists it as FAILED and the sweep exits non-zero at the end.
            print(error_line(f"job {hydra_cfg.job.num}: {message}"), file=sys.stderr)
            from .hydra_job import current_job, mlflow_settings
            from .tracking.sweep import record_failed_job

            with contextlib.suppress(Exception):  # the store itself may be what failed
                record_failed_job(mlflow_settings(cfg), current_job(), message)
            return float("nan")
        raise SystemExit(error_line(message)) from None
    except KeyboardInterrupt as stop:
        from .tracking.stale import runs_ended
        from .train.interrupt import exit_code

        print(f"interrupted: {runs_ended('KILLED')}; run the same command again to resume from the last training "
              "state (resume=false starts afresh)", file=sys.stderr)
        raise SystemExit(exit_code(stop)) from None


if __name__ == "__main__":
    try:
        main()
    finally:  # --help or a bad override ends before main's body
        collector.resume()
