"""Writes docs/reference/config.md, the configuration reference: every setting of a run, its default
under each data preset, and what it means, taken from the code so that the page cannot drift from it.

- The settings and their defaults: the config ``python -m kronos_exp`` composes (Hydra's compose API
  over kronos_exp/conf), once per data preset (``data=sample``, the default, and ``data=csv``), and
  once per architecture preset and schedule for their own tables.
- What each means: the comment on the field in the schemas (kronos_exp/schemas.py,
  kronos_exp/data/config.py), on its line or on the lines just above it, and each class's docstring.

    python docs/gen_config_reference.py          # rewrite the page
    python docs/gen_config_reference.py --check  # exit 1 when the page is not what the code gives

tests/docs/test_config_reference.py runs the check and that every setting is listed with its defaults.
"""
from __future__ import annotations

import ast
import dataclasses
import io
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "config.md"
DATA_PRESETS = ("sample", "csv")
SECTIONS = ("data", "tokenizer", "predictor", "eval", "serving", "mlflow", "phases")


# -- the config as Hydra composes it ------------------------------------------------------------


def compose(*overrides: str):
    """The config of ``python -m kronos_exp <overrides>`` (without Hydra's own section)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kronos_exp.__main__ import CONFIG_DIR  # registers the schemas and resolvers

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="kronos_exp"):
            return hydra_compose("config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value as written in the config: interpolations and ``???`` unresolved) of every
    setting; an empty mapping or a list is one setting."""
    from omegaconf import DictConfig, OmegaConf

    container = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    for key, value in container.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, path + ".")
        else:
            yield path, value


def composed_defaults(*overrides: str) -> dict[str, Any]:
    return dict(leaves(compose(*overrides)))


def fmt(value: Any) -> str:
    """A value as a command line or a config file spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return repr(value)


def interpolation_target(key: str, value: Any) -> str | None:
    """``tokenizer.lr`` for ``tokenizer.optimizer.lr: ${..lr}`` (a relative interpolation)."""
    if not (isinstance(value, str) and value.startswith("${.") and value.endswith("}")):
        return None
    body = value[2:-1]
    dots = len(body) - len(body.lstrip("."))
    parts = key.split(".")[:-1]  # the node holding the key
    return ".".join(parts[:len(parts) - (dots - 1)] + [body[dots:]])


# -- what each setting means: the schemas' comments ---------------------------------------------


def field_comments(module_file: Path) -> dict[str, dict[str, str]]:
    """{class name: {field: its comment}} from a module's source: the comment at the end of the
    field's line, else the comment lines right above it."""
    source = module_file.read_text()
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        block = ""  # a comment above a field speaks for the fields right below it, up to a blank line
        previous: tuple[str, str] | None = None  # (field, its line comment) when that comment goes on (ends ",")
        last_line = 0
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            name = item.target.id
            if any(not lines[n - 1].strip() for n in range(last_line + 1, item.lineno)):
                block = ""
            last_line = item.end_lineno or item.lineno
            above, text = item.lineno - 1, []
            while above in comments and lines[above - 1].lstrip().startswith("#"):
                text.insert(0, comments[above])
                above -= 1
            if text:
                block = " ".join(text)
            own = comments.get(item.lineno) if not lines[item.lineno - 1].lstrip().startswith("#") else None
            if own and previous:  # one sentence over two fields' lines: both get all of it
                joined = f"{previous[1]} {own}"
                fields[previous[0]] = fields[name] = joined
            elif own:
                fields[name] = own
            elif block:
                fields[name] = block
            previous = (name, own) if own and own.endswith(",") else None
            if own:  # a field with its own comment ends what a comment above said
                block = ""
    return out


def _schema_classes() -> dict[str, type]:
    from kronos_exp import schemas
    from kronos_exp.data import config as data_config

    return {name: obj for module in (schemas, data_config) for name, obj in vars(module).items()
            if dataclasses.is_dataclass(obj) and isinstance(obj, type) and obj.__module__ == module.__name__}


def _comments() -> dict[str, dict[str, str]]:
    from kronos_exp import schemas
    from kronos_exp.data import config as data_config

    out: dict[str, dict[str, str]] = {}
    for module in (schemas, data_config):
        out.update(field_comments(Path(module.__file__)))
    return out


class Descriptions:
    """The comment of each dotted key, found by walking RunConfig's dataclasses (a field typed
    ``Any``, as the optimizer and the schedule are, by the ``_target_`` of the composed node)."""

    def __init__(self):
        from kronos_exp.schemas import RunConfig

        self.classes = _schema_classes()
        self.comments = _comments()
        self.root = RunConfig
        self.by_target = {}
        for cls in self.classes.values():
            target = next((f.default for f in dataclasses.fields(cls) if f.name == "_target_"), None)
            if isinstance(target, str):
                self.by_target[target] = cls

    def own_comment(self, cls: type, name: str) -> str:
        for klass in cls.__mro__:  # a phase's TrainConfig fields are commented in TrainConfig
            text = self.comments.get(klass.__name__, {}).get(name)
            if text:
                return text
        return ""

    def schema_of(self, key: str, config: dict[str, Any]) -> tuple[type | None, str]:
        """The dataclass that declares ``key``'s last part, and that part."""
        parts = key.split(".")
        cls: type | None = self.root
        for depth, part in enumerate(parts[:-1]):
            if cls is None:
                return None, parts[-1]
            hints = typing.get_type_hints(cls)
            hint = hints.get(part)
            if hint is None:
                return None, parts[-1]
            if dataclasses.is_dataclass(hint):
                cls = hint
            else:
                target = config.get(".".join(parts[:depth + 1]) + "._target_")
                cls = self.by_target.get(target)
        return cls, parts[-1]

    def __call__(self, key: str, config: dict[str, Any]) -> str:
        cls, name = self.schema_of(key, config)
        return self.own_comment(cls, name) if cls is not None else ""

    def docstring(self, cls_name: str) -> str:
        """The first paragraph of a class's own docstring ("" for none: not dataclass's signature)."""
        doc = self.classes[cls_name].__doc__ or ""
        if doc.startswith(cls_name + "("):
            return ""
        return " ".join(doc.split("\n\n")[0].split())


# -- the page ------------------------------------------------------------------------------------


def cell(text: str) -> str:
    """Text for a table cell: ``|`` escaped, and ``<`` / ``>`` outside code spans too (Markdown would
    take ``<name>`` for an HTML tag)."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def code(value: Any) -> str:
    """A value as a code span in a table cell (only ``|`` needs escaping there)."""
    return "`" + fmt(value).replace("|", "\\|") + "`"


def value_cell(key: str, value: Any) -> str:
    shown = code(value)
    if value == "???":
        return shown + " (required)"
    target = interpolation_target(key, value)
    if target:
        return f"{shown}: `{target}`"
    if isinstance(value, list) and any(interpolation_target(key + ".x", v) for v in value):
        return shown + ": " + ", ".join(f"`{interpolation_target(key + '.x', v)}`" for v in value)
    return shown


def table(rows: list[str], header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|", *rows, ""]


def section_rows(keys: list[str], presets: dict[str, dict[str, Any]], describe: Descriptions,
                 split: bool) -> list[str]:
    rows = []
    first = presets[DATA_PRESETS[0]]
    for key in keys:
        values = [value_cell(key, p[key]) for p in (presets.values() if split else [first])]
        rows.append(f"| `{key}` | " + " | ".join(values) + f" | {cell(describe(key, first))} |")
    return rows


def preset_table(group: str, options: list[str], describe: Descriptions) -> list[str]:
    """The settings a ``tokenizer=`` / ``predictor=`` preset gives, one column per preset."""
    configs = {o: composed_defaults(f"{group}={o}") for o in options}
    keys = [k for k in configs[options[0]] if k.startswith(group + ".")
            and (k.startswith(f"{group}.arch.") or len({fmt(c[k]) for c in configs.values()}) > 1)]
    rows = [f"| `{k}` | " + " | ".join(code(configs[o][k]) for o in options)
            + f" | {cell(describe(k, configs[options[0]]))} |" for k in keys]
    return table(rows, ["setting", *[f"`{group}={o}`" for o in options], "meaning"])


def group_options(group: str) -> list[str]:
    from kronos_exp.__main__ import CONFIG_DIR

    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def render() -> str:
    describe = Descriptions()
    presets = {p: composed_defaults(f"data={p}") for p in DATA_PRESETS}
    sample = presets[DATA_PRESETS[0]]
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by docs/gen_config_reference.py from kronos_exp/schemas.py, kronos_exp/data/config.py",
        "     and kronos_exp/conf/: do not edit; run `python docs/gen_config_reference.py`. -->",
        "",
        "Every setting of a run, with its default and what it means. Set any of them on the command line",
        "(`python -m kronos_exp predictor.lr=1e-4 data.stride=4`); `python -m kronos_exp --cfg job` prints",
        "the whole config a command composes. The defaults are those of `python -m kronos_exp` with the",
        "default presets (`tokenizer=tiny`, `predictor=tiny`, `phases=both`, AdamW and OneCycle for both",
        "phases); where the data preset changes a default, both are given: `data=sample` (the bundled",
        "sample, the default, and what `python -m kronos_exp --help` shows) and `data=csv` (your own",
        "files: `python -m kronos_exp data=csv data.path=...`). `???` marks a value that must be set;",
        "`${..lr}` takes the value of the setting named after it. Each setting's meaning is the comment",
        "on its field in `kronos_exp/schemas.py` (`kronos_exp/data/config.py` for `data`).",
        "",
    ]
    top = [k for k in sample if "." not in k]
    out += ["## The run", ""]
    out += table(section_rows(top, presets, describe, split=False), ["setting", "default", "meaning"])
    intro = {"data": "DataConfig", "tokenizer": "TrainConfig", "predictor": "TrainConfig", "eval": "EvalConfig",
             "serving": "ServingConfig", "mlflow": None, "phases": None}
    notes = {
        "data": "The data preset decides these defaults: see [Your own data](../data.md).",
        "tokenizer": "The `tokenizer=tiny` preset's values; the published architectures are "
                     "[below](#architecture-presets). `optimizer` and `scheduler` read the phase's own keys.",
        "predictor": "The `predictor=tiny` preset's values; the published architectures are "
                     "[below](#architecture-presets).",
        "phases": "`phases=both` (the default); `phases=tokenizer|predictor|eval|all` pick others "
                  "([Phases and reuse](../phases.md)).",
    }
    for section in SECTIONS:
        keys = [k for k in sample if k.startswith(section + ".")]
        split = any(fmt(presets[p][k]) != fmt(sample[k]) for p in DATA_PRESETS for k in keys)
        out += [f"## {section}", ""]
        if intro[section] and describe.docstring(intro[section]):
            out += [cell(describe.docstring(intro[section])), ""]
        if section in notes:
            out += [notes[section], ""]
        defaults = [f"`data={p}`" for p in DATA_PRESETS] if split else ["default"]
        out += table(section_rows(keys, presets, describe, split), ["setting", *defaults, "meaning"])
    out += ["## Architecture presets", "",
            "`tokenizer=` and `predictor=` pick an architecture (and the settings that go with it); a",
            "pretrained checkpoint's own `config.json` overrides the architecture.", ""]
    for group in ("tokenizer", "predictor"):
        out += [f"### {group}", ""] + preset_table(group, group_options(group), describe)
    out += ["## Schedules", "",
            "`scheduler@<phase>.scheduler=<name>` picks a phase's learning-rate schedule "
            "([Experiments, optimizer and schedule](../phases.md#experiments-optimizer-and-schedule)); "
            "its settings:", ""]
    rows = []
    for name in group_options("scheduler"):
        config = composed_defaults(f"scheduler@predictor.scheduler={name}")
        for key, value in config.items():
            if key.startswith("predictor.scheduler.") and not key.endswith(("._target_", "._partial_")):
                shown = key.replace("predictor.", "<phase>.", 1)
                default = value_cell(key, value).replace("predictor.", "<phase>.")
                rows.append(f"| `{name}` | `{shown}` | {default} | {cell(describe(key, config))} |")
    out += table(rows, ["schedule", "setting", "default", "meaning"])
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python docs/gen_config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
