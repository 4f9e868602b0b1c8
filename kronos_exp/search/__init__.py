"""Hyperparameter search with Optuna: the shared study and its workers (the sweeper in
hydra_plugins/kronos_optuna_sweeper drives them, and reads the search space in Hydra's syntax
itself), and a job's link to its trial (reporting epochs, pruning). Optuna is imported only where
it is used; Hydra and OmegaConf never."""
