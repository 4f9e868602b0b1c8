"""Architecture presets of conf/tokenizer and conf/predictor for the benchmarks, read without
Hydra or a YAML library (the GPU image has neither)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "kronos_exp" / "conf"


def schema_defaults(group: str) -> dict:
    """Defaults of the arch schema in kronos_exp/schemas.py, read without importing the package."""
    cls = {"tokenizer": "TokenizerArch", "predictor": "PredictorArch"}[group]
    tree = ast.parse((ROOT / "kronos_exp" / "schemas.py").read_text())
    body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
    out = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant):
            out[node.target.id] = node.value.value
    return out


def preset(group: str, name: str) -> dict:
    """The ``arch:`` block of conf/<group>/<name>.yaml (flat ``key: value`` lines; no YAML library
    needed) over the schema's defaults."""
    arch, inside = schema_defaults(group), False
    for line in (CONF / group / f"{name}.yaml").read_text().splitlines():
        if line.startswith("arch:"):
            inside = True
        elif inside and line.startswith("  ") and ":" in line:
            key, value = (part.strip() for part in line.split("#")[0].split(":", 1))
            arch[key] = {"true": True, "false": False}.get(value.lower(), value)
            if isinstance(arch[key], str):
                arch[key] = float(value) if any(c in value for c in ".e") else int(value)
        elif inside and line.strip() and not line.startswith(" "):
            break
    return arch
