"""``hydra/launcher=slurm`` (kronos_exp/conf/hydra/launcher/slurm.yaml): the package's SLURM launcher
(submitit_launcher.py). Hydra finds launchers only in the ``hydra_plugins`` namespace package and
imports every module there on every start, so submitit and kronos_exp load only when a sweep uses it."""
