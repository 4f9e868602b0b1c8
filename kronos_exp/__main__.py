"""``python -m kronos_exp``: compose the config with Hydra and run the pipeline."""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import register_configs
from .errors import USER_ERRORS

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    from .pipeline import run  # heavy imports (torch, mlflow) after Hydra has parsed the command line

    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except USER_ERRORS as err:
        raise SystemExit(f"error: {err}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted: the MLflow runs are marked KILLED; best checkpoints so far are intact") from None


if __name__ == "__main__":
    main()
