"""What a model was trained to see, as one small value that travels with its checkpoint and its
served package: how many rows of history it normalises over, how far it forecasts, where the
normalised values are clipped and how many tokens the predictor attends to.

Training normalises each window over its own ``data.lookback_window`` rows and clips at
``data.clip``; a forecast that normalises differently (another clip, the whole history) feeds the
model inputs it never saw. So readers (evaluation, the pyfunc package, the forecast command) take
these from the checkpoint rather than restating defaults. The defaults below are the published
Kronos ones, defined here once.

Bottom layer: the standard library and kronos_exp.errors only.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError


class WindowSpecError(UserError, ValueError):
    """A window.json (or MLmodel ``kronos`` block) that cannot be used; the message names the source,
    the key and what is valid."""


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """lookback: rows of history the model normalises over and sees (None: whatever it is given, as
    for published checkpoints); horizon: the training predict_window (None: unknown); clip: the
    normalised values' bound; max_context: the most tokens the predictor attends to."""

    lookback: int | None = None
    horizon: int | None = None
    clip: float = 5.0
    max_context: int = 512

    FILE = "window.json"  # not a field (no annotation): where save/load keep it in a checkpoint folder

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Any, source: str) -> "WindowSpec":
        """Checked strictly: it is read from files anyone may have written."""
        if not isinstance(mapping, Mapping):
            raise WindowSpecError(f"{source}: the window must be a JSON object with keys "
                                  f"{', '.join(_FIELDS)}, not {type(mapping).__name__}")
        unknown = sorted(set(mapping) - set(_FIELDS), key=str)
        if unknown:
            raise WindowSpecError(f"{source}: unknown window key(s) {unknown}; valid: {', '.join(_FIELDS)}")
        values = {}
        for key, value in mapping.items():
            if key == "clip":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                    and value > 0
                what = "a finite number > 0"
            else:
                ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or (
                    value is None and key != "max_context")
                what = "an integer >= 1" + ("" if key == "max_context" else " or null")
            if not ok:
                raise WindowSpecError(f"{source}: {key}={json.dumps(value, default=repr)}; valid: {what}")
            values[key] = float(value) if key == "clip" else value
        return cls(**values)

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/window.json`` (mode 0644) through a temporary file, so a reader never sees
        half of it."""
        path = Path(folder) / self.FILE
        fd, tmp = tempfile.mkstemp(prefix=f".{self.FILE}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "WindowSpec":
        """The window saved in ``folder``; the published defaults (lookback None) where there is none,
        as in the published checkpoints."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            return cls()
        try:
            mapping = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WindowSpecError(f"{path}: not valid JSON ({err}); delete it or write a JSON object with keys "
                                  f"{', '.join(_FIELDS)}") from None
        return cls.from_mapping(mapping, str(path))


_FIELDS = tuple(f.name for f in dataclasses.fields(WindowSpec))
