"""``python -m kronos_exp.forecasting key=value ...``: the forecast command (see forecasting.cli)."""
import sys

from .cli import run

run(sys.argv[1:])
