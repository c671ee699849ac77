import sys

from common.cli import run_cli

from bench.run import main

sys.exit(run_cli(main))
