import sys

from bench.run import main
from common.cli import run_cli

sys.exit(run_cli(main))
