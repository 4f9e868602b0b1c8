"""The composed config, resolved once: Hydra's glue (the schemas registered, the resolvers) and
``resolve``, which checks every setting in one pass and hands back the typed RunConfig
(kronos_exp.schemas) that the pipeline cuts into each component's own section.

Only this module, the pipeline and the Hydra entry points read a ``DictConfig``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from .data import validate_config
from .data.config import schema_node
from .errors import ConfigError, UserError
from .metric_names import POINT_METRICS, SAMPLE_METRICS
from .objective import objective_direction
from .outputs import OUTPUTS
from .schemas import (AdamWConfig, bits_mismatch, OneCycleConfig, PredictorArch, PredictorConfig, RunConfig, TokenizerArch,
                      TokenizerConfig, TrainConfig, WarmupCosineConfig)

TRAINING_PHASES = ("tokenizer", "predictor")  # the RunConfig sections a training phase is built from
_ARCHS = {"tokenizer": TokenizerArch, "predictor": PredictorArch}


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
                 "adam_beta2": _PROBABILITY,
                 "early_stopping.patience": Range(lambda v: v is None or v >= 1,
                                                  "an integer >= 1, or null (every epoch runs)"),
                 "early_stopping.min_delta": Range(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")}
_SCHEDULE_RANGES = {"div_factor": _POSITIVE, "final_div_factor": _POSITIVE, "warmup": _PROBABILITY,
                    "min_lr_ratio": Range(lambda v: 0 <= v <= 1, "a number in [0, 1]")}
_DROPOUTS = {"tokenizer": ("ffn", "attn", "resid"), "predictor": ("ffn", "attn", "resid", "token")}

# Every numeric or name setting Hydra's types cannot bound, keyed by its dotted path; a
# ``<phase>.`` key is checked when that phase is in the run (``check_settings``), and a key of
# a choice not taken (``scheduler.warmup`` under OneCycle) only when it is.
RANGES: dict[str, Range] = {
    **{f"{phase}.{key}": r for phase in TRAINING_PHASES for key, r in _TRAIN_RANGES.items()},
    **{f"{phase}.scheduler.{key}": r for phase in TRAINING_PHASES for key, r in _SCHEDULE_RANGES.items()},
    **{f"{phase}.arch.{d}_dropout_p": _PROBABILITY for phase, kinds in _DROPOUTS.items() for d in kinds},
    "predictor.max_context": _AT_LEAST_ONE,
    **{f"serving.{key}": _AT_LEAST_ONE for key in ("max_pred_len", "max_sample_count", "max_history_rows")},
    "serving.timeout_s": _POSITIVE,
    "serving.max_concurrent": _AT_LEAST_ONE,
    "serving.queue_s": _NON_NEGATIVE,
    "serving.max_body_mb": Range(lambda v: v is None or v > 0, "a number > 0, or null (1 KB per max_history_rows row)"),
    "num_workers": Range(lambda v: v >= 0, "an integer >= 0"),
    "threads": Range(lambda v: v is None or v >= 1, "an integer >= 1, or null (automatic)"),
    "mlflow.experiment_name": Range(lambda v: bool(str(v).strip()), "a non-empty name"),
    "mlflow.http_timeout_s": _AT_LEAST_ONE,
    "mlflow.http_max_retries": Range(lambda v: v >= 0, "an integer >= 0"),
    "mlflow.offline_wait_s": _NON_NEGATIVE,
}




def _setting(run: RunConfig, key: str) -> Any:
    """The value at a dotted key of the typed config (optimizer and scheduler are plain mappings)."""
    node: Any = run
    for part in key.split("."):
        node = node.get(part, _ABSENT) if isinstance(node, dict) else getattr(node, part, _ABSENT)
        if node is _ABSENT:
            return _ABSENT
    return node


_ABSENT = object()


def _range_problems(run: RunConfig, phases: list[str]) -> list[UserError]:
    problems: list[UserError] = []
    for key, rule in RANGES.items():
        if key.split(".")[0] in TRAINING_PHASES and key.split(".")[0] not in phases:
            continue
        value = _setting(run, key)
        if value is _ABSENT:
            continue
        try:
            accepted = rule.accepts(value)
        except TypeError:
            accepted = False
        if not accepted:
            problems.append(ConfigError(f"{key}={value!r}; valid: {rule.valid}"))
    return problems


def _code_bits(section: TrainConfig) -> dict[str, int] | None:
    """The s1/s2 bit widths a phase will have: its arch, or a local pretrained checkpoint's
    config.json (None when that is a hub id or unreadable: the phase checks it when it loads)."""
    from .model.checkpoint import CONFIG_NAME  # torch: not for --help

    if not section.pretrained:
        return {b: getattr(section.arch, b) for b in ("s1_bits", "s2_bits")}
    try:
        config = json.loads((Path(str(section.pretrained)).expanduser() / CONFIG_NAME).read_text())
        return {b: config[b] for b in ("s1_bits", "s2_bits")}
    except (OSError, ValueError, KeyError):
        return None


def _bits_problems(run: RunConfig) -> list[UserError]:
    tokenizer, predictor = _code_bits(run.tokenizer), _code_bits(run.predictor)
    if not (tokenizer and predictor):
        return []
    return [bits_mismatch(predictor[b], tokenizer[b], b, "the tokenizer", run.predictor.pretrained,
                          run.tokenizer.pretrained) for b in ("s1_bits", "s2_bits") if predictor[b] != tokenizer[b]]


def _eval_problems(run: RunConfig) -> list[UserError]:
    """What the eval step cannot run with, said before any phase trains."""
    e, data, problems = run.eval, run.data, []
    if data.test_ratio == 0:
        problems.append(ConfigError(
            "eval: there is no test split (data.test_ratio=0), so there is nothing to report on; set "
            "data.test_ratio > 0 (e.g. 0.1) or leave the eval phase out (phases=both)"))
    if run.predictor.pretrained and not run.tokenizer.pretrained:
        problems.append(ConfigError(
            f"eval: predictor.pretrained={run.predictor.pretrained} is compared with the fine-tuned model, but "
            "tokenizer.pretrained is null: the published predictor only reads the codes of the tokenizer published "
            "with it, so pairing it with this run's tokenizer would not be a fair comparison. Set "
            "tokenizer.pretrained to that tokenizer (e.g. NeoQuasar/Kronos-Tokenizer-base for Kronos-small)"))
    if not 1 <= (e.pred_len or data.predict_window) <= data.predict_window:
        problems.append(ConfigError(f"eval.pred_len={e.pred_len} but windows hold data.predict_window="
                                    f"{data.predict_window} future rows; use 1..{data.predict_window} or null"))
    for key, low in (("windows", 1), ("sample_count", 1), ("plot_series", 0)):
        if getattr(e, key) < low:
            problems.append(ConfigError(f"eval.{key}={getattr(e, key)} must be >= {low}"))
    if not (e.T > 0 and 0 < e.top_p <= 1 and e.top_k >= 0):
        problems.append(ConfigError(f"eval.T={e.T}, eval.top_p={e.top_p}, eval.top_k={e.top_k}: need T > 0, "
                                    "0 < top_p <= 1, top_k >= 0"))
    known = POINT_METRICS + (SAMPLE_METRICS if e.sample_count > 1 else ())
    if e.metric not in known:
        problems.append(ConfigError(f"eval.metric={e.metric} is not one of {', '.join(known)} "
                                    f"({', '.join(SAMPLE_METRICS)} need eval.sample_count > 1)"))
    return problems


def one_error(problems: list[UserError]) -> UserError | None:
    """Every problem found, as one error: the problem itself when there is one, else a list."""
    if len(problems) <= 1:
        return problems[0] if problems else None
    return ConfigError(f"{len(problems)} settings cannot work:\n" + "\n".join(f"  - {p}" for p in problems))


def _pretrained_architecture(section: TrainConfig, name: str, problems: list[UserError]) -> None:
    """A pretrained checkpoint's config.json decides its phase's architecture: ``<phase>.arch``
    becomes it, so the params and resolved config in MLflow show what actually trains."""
    from .model.checkpoint import CONFIG_NAME, CheckpointError, resolve_checkpoint_dir  # torch: not for --help

    try:
        folder = resolve_checkpoint_dir(section.pretrained)
        config = json.loads((folder / CONFIG_NAME).read_text())
        section.arch = _ARCHS[name](**config)
    except UserError as err:
        problems.append(err)
    except (TypeError, ValueError) as err:
        problems.append(CheckpointError(f"{section.pretrained}: {CONFIG_NAME} is not a Kronos {name} config "
                                        f"({str(err).splitlines()[0]})"))


def _typed(cfg: DictConfig, problems: list[UserError]) -> RunConfig | None:
    """The composed config (less Hydra's own node) as RunConfig; None where a mandatory value is
    missing or a key the schema lacks (already among ``problems``) keeps it from being built."""
    composed = cfg.copy()
    with open_dict(composed):
        composed.pop("hydra", None)
        if OmegaConf.is_missing(composed.data, "path") and composed.data.paths:
            composed.data.path = None
    missing = sorted(OmegaConf.missing_keys(composed))
    for key in missing:
        problems.append(ConfigError("data.path is required: set data.path=<file.csv, glob or folder> (or "
                                    "data.paths=[...])" if key == "data.path" else f"{key} is required (no value "
                                    f"set); set it on the command line, e.g. {key}=..."))
    if missing:
        return None
    try:
        return OmegaConf.to_object(composed)
    except (TypeError, ValueError):  # an unknown key (+predictor.lrr=1) has no field to go into
        if problems:
            return None
        raise


def resolve(cfg: DictConfig) -> RunConfig:
    """Check every setting of a composed config at once and return it typed: unknown keys, missing
    values, ranges, the data section, pretrained architectures, bit widths and the eval step's
    settings. Each phase section gets its seed (its own, else the run's) and plain optimizer and
    scheduler mappings; a bad value fails in a second, naming its key, not after a phase trained."""
    problems = unknown_keys(cfg)
    run = _typed(cfg, problems)
    if run is not None:
        phases = list(run.phases)
        try:
            run.data = validate_config(run.data)
        except UserError as err:
            problems.append(err)
        for name in TRAINING_PHASES:
            section = getattr(run, name)
            if section.pretrained and (name == "tokenizer" or name in phases):
                _pretrained_architecture(section, name, problems)
            for part in ("optimizer", "scheduler"):
                node = getattr(section, part)
                setattr(section, part, dataclasses.asdict(node) if dataclasses.is_dataclass(node) else dict(node))
        for section in (run.tokenizer, run.predictor, run.eval):  # a section's own seed, else the run's
            section.seed = run.seed if section.seed is None else section.seed
        problems += _range_problems(run, phases)
        problems += _bits_problems(run) if "predictor" in phases and not problems else []
        problems += _eval_problems(run) if "eval" in phases else []
    error = one_error(problems)
    if error is not None:
        raise error
    return run


def _invocation_id() -> str:
    """``<pid>-<random>``: the run-folder suffix that keeps two invocations started in the same
    second apart. Cached in the config (like ``${now:}``), so sweep workers see the same value."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"


def _open_maps(node: DictConfig, *keys: str) -> DictConfig:
    """Let the mappings at ``keys`` take new keys: Hydra locks the whole config (struct mode), so a
    ``data.column_map={Px_Last: close}`` override would otherwise need a ``+``."""
    for key in keys:
        OmegaConf.set_struct(OmegaConf.select(node, key), False)
    return node


def _direction_or_none(*, _root_) -> str | list[str] | None:
    """The objective's direction for the sweeper's config; None where it has none, so the sweeper
    refuses it in one line (an error raised here would reach the user as an interpolation traceback)."""
    try:
        return objective_direction(_root_)
    except ConfigError:
        return None


def register_configs() -> None:
    if not OmegaConf.has_resolver("kronos_outputs"):  # conf/config.yaml's run and sweep folders
        OmegaConf.register_new_resolver("kronos_outputs", lambda: OUTPUTS)
    if not OmegaConf.has_resolver("kronos_unique"):
        OmegaConf.register_new_resolver("kronos_unique", _invocation_id, use_cache=True)
    if not OmegaConf.has_resolver("kronos_objective_direction"):  # conf/hparams_search/optuna.yaml
        OmegaConf.register_new_resolver("kronos_objective_direction", _direction_or_none)
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=_open_maps(OmegaConf.structured(RunConfig), "data.column_map"))
    cs.store(group="data", name="schema", node=_open_maps(OmegaConf.structured(schema_node()), "column_map"))
    cs.store(group="tokenizer", name="schema", node=TokenizerConfig)
    cs.store(group="predictor", name="schema", node=PredictorConfig)
    cs.store(group="optimizer", name="adamw_schema", node=AdamWConfig)
    cs.store(group="scheduler", name="onecycle_schema", node=OneCycleConfig)
    cs.store(group="scheduler", name="cosine_schema", node=WarmupCosineConfig)


def unknown_keys(cfg: DictConfig) -> list[UserError]:
    """Every key must be in the schema. Hydra refuses ``predictor.lrr=1`` but lets ``+predictor.lrr=1``
    add a key nothing reads; that is a typo too, so it stops the run."""
    problems: list[UserError] = []

    def walk(node: Any, schema: type, prefix: str) -> None:
        fields = {f.name: f.type for f in dataclasses.fields(schema)}
        hints = typing.get_type_hints(schema)
        for key in node:
            if not prefix and key == "hydra":  # Hydra's own node (composed with return_hydra_config)
                continue
            if key not in fields:
                problems.append(ConfigError(f"unknown key {prefix}{key}; {prefix.rstrip('.') or 'the config'} has "
                                            f"{', '.join(sorted(fields))}"))
                continue
            if OmegaConf.is_missing(node, key):  # a mandatory value not given: _typed says so
                continue
            schema_of = hints[key] if dataclasses.is_dataclass(hints[key]) else OmegaConf.get_type(node[key])
            if dataclasses.is_dataclass(schema_of) and isinstance(node[key], DictConfig):  # `Any` fields: the choice's
                walk(node[key], schema_of, f"{prefix}{key}.")

    walk(cfg, RunConfig, "")
    return problems
