"""The sha256 of a file's bytes: what the data fingerprint, the series cache and the registry's
integrity checks compare."""
from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 24


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
