"""The run's settings as typed values: what Hydra validates a composed config against, and what
each component is handed once the config is resolved (kronos_exp.config.resolve).

The groups mirror the code: ``data`` -> kronos_exp.data (its schema, DataConfig, lives there),
``tokenizer`` / ``predictor`` -> the training phases, ``eval`` -> kronos_exp.evaluation,
``serving`` -> the packaged model's request limits, ``mlflow`` -> kronos_exp.tracking.
Plain dataclasses (and the wording of the one rule between two sections, the predictor's codes
matching the tokenizer's): importing them loads neither Hydra nor OmegaConf.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .data.config import DataConfig, schema_node
from .errors import ConfigError
from .window import WindowSpec

MISSING: Any = "???"  # OmegaConf's marker of a mandatory value


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
class EarlyStoppingConfig:
    """Stop a phase once its validation loss has gone ``patience`` epochs without improving; the
    phase keeps its best checkpoint either way. It watches ``val_loss`` alone, the loss that picks
    the best checkpoint, so the checkpoint kept is the one the stop was judged by."""
    patience: Optional[int] = None  # epochs without an improvement before the phase stops; null = every epoch runs
    min_delta: float = 0.0  # an epoch improves when its val_loss is below the best before it by more than this


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
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    optimizer: Any = MISSING  # a conf/optimizer/ choice (config.yaml: adamw)
    scheduler: Any = MISSING  # a conf/scheduler/ choice (config.yaml: onecycle)


@dataclass
class TokenizerConfig(TrainConfig):
    arch: TokenizerArch = field(default_factory=TokenizerArch)


@dataclass
class PredictorConfig(TrainConfig):
    lr: float = 4e-5
    arch: PredictorArch = field(default_factory=PredictorArch)
    max_context: int = WindowSpec.max_context  # longest token history the predictor attends to (published: mini 2048)
    teacher_forcing: bool = True  # s2 conditioned on the true s1; false = sampled s1 (reference recipe)
    token_cache_mb: float = 256.0  # encode train/val windows once per run up to this size; past it, per batch


@dataclass
class EvalConfig:
    """Rolling-origin forecasts over the test split (kronos_exp.eval_step, kronos_exp.evaluation)."""
    # Checkpoint folder or models:/<name>/<version> (or models:/<name>@<alias>); null = this run's
    # predictor, else the registered one whose fingerprint matches this config.
    predictor: Optional[str] = None
    # null = the tokenizer packaged with the predictor version, else this run's / the registered one.
    tokenizer: Optional[str] = None
    windows: int = 32  # forecast origins per split (validation and test), at most: windows // series dates
    overlap: bool = False  # false: one series' origins a horizon apart (independent errors); true: evenly spaced
    pred_len: Optional[int] = None  # forecast steps; null = data.predict_window (the most a test window holds)
    sample_count: int = 8  # sampled paths per window; > 1 adds CRPS and the 10-90% band
    T: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    seed: Optional[int] = None  # null = the run's seed
    metric: str = "close_mae"  # on the validation split: objective default, and what the `alias` ranks by
    # Registry aliases on the predictor version with the best validation metric: `<alias>-<data key>` for the data
    # evaluated, and `<alias>` itself for the first data set evaluated (docs/evaluation.md, "The best model
    # of each data set"); null = none.
    alias: Optional[str] = "best"
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
    # A request body past this many MB (10^6 bytes) is refused (413) before it is read, where the
    # server runs forecasting.body_limit; null = 1 KB per max_history_rows row (JSON needs ~250), at least 1
    max_body_mb: Optional[float] = None
    max_concurrent: int = 2  # forecasts running at once; a request finding none free waits queue_s,
    queue_s: float = 2.0  # then is refused (HTTP 503) rather than queued behind long ones


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
    # SLURM granted, else this process's cores that other runnable tasks leave free, shared among
    # parallel jobs; 1 per torchrun process
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


def bits_advice(predictor_pretrained: str | None, tokenizer_pretrained: str | None, bits: str,
                tokenizer_bits: int) -> str:
    """How to make the predictor's ``bits`` match the tokenizer's: a pretrained checkpoint's
    config.json fixes its bit widths, so the advice depends on which side is pretrained."""
    if not predictor_pretrained:
        return f"set predictor.arch.{bits}={tokenizer_bits}, or pick matching presets"
    fix = (f"tokenizer.pretrained={tokenizer_pretrained} fixes the tokenizer's too, so pair "
           "checkpoints with the same bit widths" if tokenizer_pretrained else
           f"train a tokenizer whose tokenizer.arch.{bits} matches, or set tokenizer.pretrained to one")
    return (f"predictor.pretrained={predictor_pretrained} sets the predictor's {bits} from its "
            f"config.json, so predictor.arch cannot change it; {fix}, or drop predictor.pretrained")


def bits_mismatch(predictor_bits: int, tokenizer_bits: int, bits: str, tokenizer_label: str,
                  predictor_pretrained: str | None, tokenizer_pretrained: str | None) -> ConfigError:
    """The one wording of a predictor whose vocabulary does not fit its tokenizer's codes (checked
    here before any work, and again by the predictor phase on the checkpoints it loads)."""
    return ConfigError(
        f"predictor {bits}={predictor_bits} but {tokenizer_label} has {bits}={tokenizer_bits}; the predictor's "
        f"vocabulary must match the tokenizer's codes "
        f"({bits_advice(predictor_pretrained, tokenizer_pretrained, bits, tokenizer_bits)})")
