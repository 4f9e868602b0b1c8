"""Fingerprints: a hash of exactly what determines a phase's result.

Two runs with the same fingerprint train the same checkpoint, so the second can reuse the first's.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path: what a checkpoint is, byte for byte."""
    root = Path(folder)
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


def fingerprint(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` (keys sorted, so order never matters)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
