"""Config schemas: Hydra validates every run against these before any work starts.

The groups mirror the code: ``data`` -> kronos_exp.data, ``tokenizer`` / ``predictor`` -> the
phase runners and kronos_exp.model, ``phases`` -> the runners to instantiate, ``mlflow`` ->
kronos_exp.tracking. Architecture presets live in conf/tokenizer/*.yaml and conf/predictor/*.yaml.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .errors import ConfigError
from .metric_names import maximised

from .data import DataConfig
from .data.config import schema_node


@dataclass
class TokenizerArch:
    """Constructor arguments of KronosTokenizer (the published config.json keys)."""
    d_in: int = 6
    d_model: int = MISSING
    n_heads: int = MISSING
    ff_dim: int = MISSING
    n_enc_layers: int = MISSING
    n_dec_layers: int = MISSING
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    s1_bits: int = MISSING
    s2_bits: int = MISSING
    beta: float = 0.05
    gamma0: float = 1.0
    gamma: float = 1.1
    zeta: float = 0.05
    group_size: int = 4


@dataclass
class PredictorArch:
    """Constructor arguments of Kronos (the published config.json keys)."""
    s1_bits: int = MISSING
    s2_bits: int = MISSING
    n_layers: int = MISSING
    d_model: int = MISSING
    n_heads: int = MISSING
    ff_dim: int = MISSING
    ffn_dropout_p: float = 0.0
    attn_dropout_p: float = 0.0
    resid_dropout_p: float = 0.0
    token_dropout_p: float = 0.0
    learn_te: bool = True


@dataclass
class AdamWConfig:
    """conf/optimizer/adamw.yaml: Hydra builds ``torch.optim.AdamW(params, ...)`` once the loop has
    the parameters. Its values read the phase's own keys (``${..lr}``...): see TrainConfig."""
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = MISSING
    betas: List[float] = MISSING
    weight_decay: float = MISSING


@dataclass
class OneCycleConfig:
    """conf/scheduler/onecycle.yaml (the default): ``OneCycleLR(optimizer, total_steps=...)``."""
    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    _partial_: bool = True
    max_lr: float = MISSING
    pct_start: float = MISSING
    div_factor: float = 10.0  # the first lr is max_lr / div_factor
    final_div_factor: float = 100.0  # the last lr is the first / final_div_factor


@dataclass
class WarmupCosineConfig:
    """conf/scheduler/cosine.yaml: linear warm-up to lr, then a cosine down to lr * min_lr_ratio."""
    _target_: str = "kronos_exp.train.optim.warmup_cosine"
    _partial_: bool = True
    warmup: float = MISSING  # fraction of the optimizer steps spent warming up
    min_lr_ratio: float = 0.1


@dataclass
class TrainConfig:
    """Optimisation settings shared by every training phase.

    ``optimizer`` and ``scheduler`` are ``_partial_`` configs (conf/optimizer/, conf/scheduler/;
    AdamW + OneCycle by default) whose values interpolate the phase's own keys: ``lr``,
    ``weight_decay``, ``adam_beta1/2``, ``pct_start`` stay the one place users and sweeps set them,
    and swapping the schedule keeps them meaningful. Interpolation rather than the loop passing
    them, so the optimizer config says which phase keys it reads, another optimizer can read the
    ones it takes and no others, and the resolved values enter the fingerprint where they are used.
    """
    pretrained: Optional[str] = None  # local checkpoint folder or hub id; null = random init from arch
    seed: Optional[int] = None  # this phase's seed; null = the run's `seed`
    epochs: int = 3
    lr: float = 2e-4
    batch_size: int = 32
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    pct_start: float = 0.03  # OneCycle warm-up fraction
    grad_clip: float = 2.0  # max gradient norm; 0 disables clipping
    accumulation_steps: int = 1
    log_interval: int = 10  # optimizer steps between train_loss/lr logs
    no_decay_groups: bool = False  # true: biases, norms and embeddings take no weight decay
    optimizer: Any = MISSING  # a conf/optimizer/ choice (config.yaml: adamw)
    scheduler: Any = MISSING  # a conf/scheduler/ choice (config.yaml: onecycle)


@dataclass
class TokenizerConfig(TrainConfig):
    arch: TokenizerArch = field(default_factory=TokenizerArch)


@dataclass
class PredictorConfig(TrainConfig):
    lr: float = 4e-5
    arch: PredictorArch = field(default_factory=PredictorArch)
    max_context: int = 512  # longest token history the predictor attends to (published: mini 2048)
    teacher_forcing: bool = True  # s2 conditioned on the true s1; false = sampled s1 (reference recipe)
    token_cache_mb: float = 256.0  # encode train/val windows once per run up to this size; past it, per batch


@dataclass
class EvalConfig:
    """Rolling-origin forecasts over the test split (kronos_exp.evaluation.step)."""
    # Checkpoint folder or models:/<name>/<version> (or models:/<name>@<alias>); null = this run's
    # predictor, else the registered one whose fingerprint matches this config.
    predictor: Optional[str] = None
    # null = the tokenizer packaged with the predictor version, else this run's / the registered one.
    tokenizer: Optional[str] = None
    windows: int = 32  # forecast origins per split (validation and test), at most
    overlap: bool = False  # false: one series' origins a horizon apart (independent errors); true: evenly spaced
    pred_len: Optional[int] = None  # forecast steps; null = data.predict_window (the most a test window holds)
    sample_count: int = 8  # sampled paths per window; > 1 adds CRPS and the 10-90% band
    T: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    seed: Optional[int] = None  # null = the run's seed
    metric: str = "close_mae"  # on the validation split: objective default, and what the `alias` ranks by
    alias: Optional[str] = "best"  # registry alias on the predictor version with the best validation metric; null = none
    plot_series: int = 3  # fan charts for up to this many series
    # The test forecasts traded: long the k series with the highest forecast return, short the k lowest
    # (one series: long/short by the forecast's sign), paying this many basis points per unit of turnover.
    backtest_k: int = 1
    backtest_cost_bps: float = 5.0


@dataclass
class ServingConfig:
    """What one request to the served predictor (``mlflow models serve``) may ask; written into the
    predictor's package when it is registered (forecasting.requests), a request past them is refused."""
    max_pred_len: int = 512
    max_sample_count: int = 32
    max_history_rows: int = 2048
    timeout_s: float = 30.0  # a request still generating after this long is stopped (HTTP 504)


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # null = sqlite:///<cwd>/outputs/mlflow.db
    heartbeat_s: float = 30.0  # a training phase run refreshes its claim this often; dead after 4 missed
    experiment_name: str = "kronos_exp"
    tokenizer_model_name: str = "kronos-tokenizer"
    predictor_model_name: str = "kronos-predictor"
    # A remote server (http/https): seconds one request may take, retries of a failed request, and
    # how long a finished phase waits for a lost server to come back before giving up on recording.
    http_timeout_s: int = 10
    http_max_retries: int = 2
    offline_wait_s: float = 30.0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=schema_node)  # data.path required unless a preset sets it
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    phases: Dict[str, Any] = field(default_factory=dict)  # name -> {_target_: runner class}
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where the hardware runs it fast, else fp32) | fp32 | bf16 | fp16 (CUDA)
    compile: bool = False  # torch.compile the model (warm-up of tens of seconds; falls back with a warning)
    num_workers: int = 0  # DataLoader workers
    # torch's CPU threads in this process; null = automatic (kronos_exp/train/threads.py): the CPUs
    # SLURM granted, else this process's cores, shared among parallel jobs; 1 per torchrun process
    threads: Optional[int] = None
    # Resume a phase from the `last` training state of an unfinished run with its fingerprint;
    # null = whenever the store holds one, false = always start afresh.
    resume: Optional[bool] = None
    checkpoint_every_steps: int = 200  # optimizer steps between `last` states (also saved each epoch); 0 = epochs only
    dist_backend: Optional[str] = None  # torchrun process group: null = nccl on CUDA, gloo on CPU
    # Reuse a registered checkpoint with the same fingerprint; null = true in sweeps, false otherwise.
    skip_existing: Optional[bool] = None
    # returned to sweepers: any metric a phase reports on validation data (<phase>_val_loss,
    # eval_val_close_mae, ...; never a test one), or a list of them for a search on several at
    # once ([a,b]); null = the last phase's own (its val_loss; eval_val_<eval.metric> for the eval phase)
    objective: Any = None


@dataclass(frozen=True)
class Range:
    """What a setting accepts, as a test and as the words the error shows."""
    accepts: Callable[[Any], bool]
    valid: str


_AT_LEAST_ONE = Range(lambda v: v >= 1, "an integer >= 1")
_POSITIVE = Range(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = Range(lambda v: v >= 0, "a number >= 0")
_OPEN_FRACTION = Range(lambda v: 0 < v < 1, "a number strictly between 0 and 1")
_PROBABILITY = Range(lambda v: 0 <= v < 1, "a number in [0, 1)")
_TRAIN_RANGES = {"epochs": _AT_LEAST_ONE, "batch_size": _AT_LEAST_ONE, "accumulation_steps": _AT_LEAST_ONE,
                 "log_interval": _AT_LEAST_ONE, "lr": _POSITIVE, "pct_start": _OPEN_FRACTION,
                 "grad_clip": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE, "adam_beta1": _PROBABILITY,
                 "adam_beta2": _PROBABILITY}
_SCHEDULE_RANGES = {"div_factor": _POSITIVE, "final_div_factor": _POSITIVE, "warmup": _PROBABILITY,
                    "min_lr_ratio": Range(lambda v: 0 <= v <= 1, "a number in [0, 1]")}
_DROPOUTS = {"tokenizer": ("ffn", "attn", "resid"), "predictor": ("ffn", "attn", "resid", "token")}

# Every numeric or name setting Hydra's types cannot bound, keyed by its dotted path; a
# ``<phase>.`` key is checked when that phase is in the run (``check_settings``), and a key of
# a choice not taken (``scheduler.warmup`` under OneCycle) only when it is.
RANGES: dict[str, Range] = {
    **{f"{phase}.{key}": r for phase in _DROPOUTS for key, r in _TRAIN_RANGES.items()},
    **{f"{phase}.scheduler.{key}": r for phase in _DROPOUTS for key, r in _SCHEDULE_RANGES.items()},
    **{f"{phase}.arch.{d}_dropout_p": _PROBABILITY for phase, kinds in _DROPOUTS.items() for d in kinds},
    "predictor.max_context": _AT_LEAST_ONE,
    **{f"serving.{key}": _AT_LEAST_ONE for key in ("max_pred_len", "max_sample_count", "max_history_rows")},
    "serving.timeout_s": _POSITIVE,
    "num_workers": Range(lambda v: v >= 0, "an integer >= 0"),
    "threads": Range(lambda v: v is None or v >= 1, "an integer >= 1, or null (automatic)"),
    "mlflow.experiment_name": Range(lambda v: bool(str(v).strip()), "a non-empty name"),
    "mlflow.http_timeout_s": _AT_LEAST_ONE,
    "mlflow.http_max_retries": Range(lambda v: v >= 0, "an integer >= 0"),
    "mlflow.offline_wait_s": _NON_NEGATIVE,
}


def phase_seed(cfg: Any, name: str) -> int:
    """Phase ``name``'s seed: its own ``<name>.seed``, else the run's ``seed``."""
    own = cfg[name].get("seed")
    return int(cfg.seed if own is None else own)


def _code_bits(cfg: Any, phase: str) -> dict[str, int] | None:
    """The s1/s2 bit widths ``phase`` will have: its arch, or a local pretrained checkpoint's
    config.json (None when that is a hub id or unreadable: the phase checks it when it loads)."""
    pretrained = cfg[phase].pretrained
    if not pretrained:
        return {b: cfg[phase].arch[b] for b in ("s1_bits", "s2_bits")}
    try:
        config = json.loads((Path(str(pretrained)).expanduser() / "config.json").read_text())
        return {b: config[b] for b in ("s1_bits", "s2_bits")}
    except (OSError, ValueError, KeyError):
        return None


def bits_advice(cfg: Any, bits: str, tokenizer_bits: int) -> str:
    """How to make the predictor's ``bits`` match the tokenizer's: a pretrained checkpoint's
    config.json fixes its bit widths, so the advice depends on which side is pretrained."""
    if not cfg.predictor.pretrained:
        return f"set predictor.arch.{bits}={tokenizer_bits}, or pick matching presets"
    fix = (f"tokenizer.pretrained={cfg.tokenizer.pretrained} fixes the tokenizer's too, so pair "
           "checkpoints with the same bit widths" if cfg.tokenizer.pretrained else
           f"train a tokenizer whose tokenizer.arch.{bits} matches, or set tokenizer.pretrained to one")
    return (f"predictor.pretrained={cfg.predictor.pretrained} sets the predictor's {bits} from its "
            f"config.json, so predictor.arch cannot change it; {fix}, or drop predictor.pretrained")


_ABSENT = object()


def check_settings(cfg: Any, phases: list[str]) -> None:
    """Every setting of this run in its range, and the predictor's codes matching the tokenizer's,
    before any work: a bad value fails in a second, naming its key, not after a phase trained."""
    for key, rule in RANGES.items():
        if key.split(".")[0] in _DROPOUTS and key.split(".")[0] not in phases:
            continue
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        try:
            accepted = rule.accepts(value)
        except TypeError:
            accepted = False
        if not accepted:
            raise ConfigError(f"{key}={value!r}; valid: {rule.valid}")
    if "predictor" in phases:
        tokenizer, predictor = _code_bits(cfg, "tokenizer"), _code_bits(cfg, "predictor")
        for bits in ("s1_bits", "s2_bits") if tokenizer and predictor else ():
            if predictor[bits] != tokenizer[bits]:
                raise ConfigError(
                    f"predictor {bits}={predictor[bits]} but the tokenizer has {bits}={tokenizer[bits]}; the "
                    f"predictor's vocabulary must match the tokenizer's codes ({bits_advice(cfg, bits, tokenizer[bits])})")


def _invocation_id() -> str:
    """``<pid>-<random>``: the run-folder suffix that keeps two invocations started in the same
    second apart. Cached in the config (like ``${now:}``), so sweep workers see the same value."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"
def objective_metrics(cfg: Any) -> list[str]:
    """The metrics a run returns to sweepers: ``objective`` (one name or a list), else the last
    phase's own (its ``<phase>_val_loss``; ``eval_val_<eval.metric>``, on the validation split, for
    the eval phase)."""
    objective = OmegaConf.select(cfg, "objective")
    if objective is not None:
        names = list(objective) if OmegaConf.is_list(objective) or isinstance(objective, list) else [objective]
        if not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"objective={objective}; valid: a metric name, a list of them ([a,b]), or null")
        return names
    last = list(OmegaConf.select(cfg, "phases") or {"": None})[-1]
    return [f"eval_val_{OmegaConf.select(cfg, 'eval.metric')}" if last == "eval" else f"{last}_val_loss"]


def objective_metric(cfg: Any) -> str:
    """The first of ``objective_metrics``: the one a search on a single objective optimises."""
    return objective_metrics(cfg)[0]


def objective_directions(cfg: Any) -> list[str]:
    """``maximize`` or ``minimize`` for each objective metric: which way it improves, for the
    sweepers (the Optuna sweeper's ``hydra.sweeper.direction`` when null, the sweep's job table)."""
    directions = []
    for name in objective_metrics(cfg):
        better = maximised(name)
        if better is None:
            raise ConfigError(f"objective {name} has no better direction (a calibrated 10-90% band covers 80%, so "
                              "neither more nor less coverage is better); set objective= to another metric, e.g. "
                              "eval_crps, or give the direction yourself (hydra.sweeper.direction=maximize|minimize)")
        directions.append("maximize" if better else "minimize")
    return directions


def objective_direction(cfg: Any) -> str | list[str]:
    """The direction of a single objective, or the list of them for several."""
    directions = objective_directions(cfg)
    return directions[0] if len(directions) == 1 else directions


def _open_maps(node: DictConfig, *keys: str) -> DictConfig:
    """Let the mappings at ``keys`` take new keys: Hydra locks the whole config (struct mode), so a
    ``data.column_map={Px_Last: close}`` override would otherwise need a ``+``."""
    for key in keys:
        OmegaConf.set_struct(OmegaConf.select(node, key), False)
    return node


def register_configs() -> None:
    if not OmegaConf.has_resolver("kronos_unique"):
        OmegaConf.register_new_resolver("kronos_unique", _invocation_id, use_cache=True)
    if not OmegaConf.has_resolver("kronos_objective_direction"):  # conf/hparams_search/optuna.yaml
        OmegaConf.register_new_resolver("kronos_objective_direction", lambda *, _root_: objective_direction(_root_))
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=_open_maps(OmegaConf.structured(RunConfig), "data.column_map"))
    cs.store(group="data", name="schema", node=_open_maps(OmegaConf.structured(schema_node()), "column_map"))
    cs.store(group="tokenizer", name="schema", node=TokenizerConfig)
    cs.store(group="predictor", name="schema", node=PredictorConfig)
    cs.store(group="optimizer", name="adamw_schema", node=AdamWConfig)
    cs.store(group="scheduler", name="onecycle_schema", node=OneCycleConfig)
    cs.store(group="scheduler", name="cosine_schema", node=WarmupCosineConfig)


def check_known_keys(cfg: DictConfig) -> None:
    """Every key must be in the schema. Hydra refuses ``predictor.lrr=1`` but lets ``+predictor.lrr=1``
    add a key nothing reads; that is a typo too, so it stops the run here."""
    def walk(node: Any, schema: type, prefix: str) -> None:
        fields = {f.name: f.type for f in dataclasses.fields(schema)}
        hints = typing.get_type_hints(schema)
        for key in node:
            if key not in fields:
                raise ConfigError(f"unknown key {prefix}{key}; {prefix.rstrip('.') or 'the config'} has "
                                  f"{', '.join(sorted(fields))}")
            schema_of = hints[key] if dataclasses.is_dataclass(hints[key]) else OmegaConf.get_type(node[key])
            if dataclasses.is_dataclass(schema_of) and isinstance(node[key], DictConfig):  # `Any` fields: the choice's
                walk(node[key], schema_of, f"{prefix}{key}.")

    walk(cfg, RunConfig, "")
