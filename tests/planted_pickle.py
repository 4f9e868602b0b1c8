"""What an attacker plants where the product loads a file: a pickle whose loading creates a marker
file, so a test sees whether anything unpickled it."""
from __future__ import annotations

import pickle
from pathlib import Path


class Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_pickle(marker: Path) -> bytes:
    """Bytes that create ``marker`` when unpickled (by ``pickle`` or ``torch.load(weights_only=False)``)."""
    return pickle.dumps(Payload(marker))
