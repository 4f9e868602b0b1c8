"""The sha256 of a file's bytes: what the data fingerprint, the series cache and the registry's
integrity checks compare."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

_BLOCK = 1 << 24


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return stream_sha256(fh)


def stream_sha256(fh: BinaryIO) -> str:
    """The sha256 of the rest of an open file: of the very file a caller checked once it was open."""
    digest = hashlib.sha256()
    while block := fh.read(_BLOCK):
        digest.update(block)
    return digest.hexdigest()
