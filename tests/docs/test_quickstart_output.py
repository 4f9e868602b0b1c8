"""The quickstart's output as docs/index.md and the README show it is the run's own: the banner's
lines, each epoch's line and the closing summary, in that order (a short run of the same command,
``python -m kronos_exp phases=both``, in this process; numbers, times and paths differ)."""
from __future__ import annotations

import re

from harness import page


def _shape(lines: list[str]) -> list[str]:
    """What a line is, without its numbers, times and paths: the banner's label, the epoch line's
    phase, the summary's parts."""
    out = []
    for line in lines:
        line = re.sub(r"^\[[^]]+\]\[[^]]+\]\[\w+\] - ", "", line)  # the log prefix
        if re.match(r"kronos_exp \w+( -> \w+)*$", line):
            out.append(line)
        elif re.match(r"  (data|train|val|test|device|threads|mlflow|outputs) ", line):
            out.append("banner " + line.split()[0])
        elif m := re.match(r"(\w+) epoch \d+/\d+: train_loss \S+  val_loss \S+  \S+ samples/s$", line):
            out.append(f"epoch {m.group(1)}")
        elif re.match(r"done in \S+s; objective \S+$", line):
            out.append("done")
        elif m := re.match(r"  (\w+) +best val_loss \S+  trained, registered kronos-\w+ v\d+$", line):
            out.append(f"summary {m.group(1)}")
        elif re.match(r" +checkpoint /\S+/checkpoints/\w+$", line):
            out.append("checkpoint")
        elif line.startswith("  open the MLflow UI: mlflow ui --backend-store-uri sqlite:///"):
            out.append("ui")
    return [s for i, s in enumerate(out) if i == 0 or s != out[i - 1] or not s.startswith("epoch")]


def test_the_quickstart_prints_what_the_manual_shows(pipeline):
    shown = re.search(r"```text\n\$ python -m kronos_exp phases=both\n(.*?)```", page("index"), re.S).group(1)
    outcome = pipeline.run("phases=both")
    printed = _shape(outcome.stdout.splitlines())
    assert printed == _shape(shown.splitlines())
    assert printed[:2] == ["kronos_exp tokenizer -> predictor", "banner data"] and printed[-1] == "ui"
    # The README's trimmed copy keeps the same lines, in the same order.
    readme = re.search(r"```text\n\$ python -m kronos_exp phases=both\n(.*?)```", page("README"), re.S).group(1)
    trimmed = _shape(readme.splitlines())
    assert [s for s in printed if s in trimmed] == trimmed
