"""`python -m models.qwen3.export --help`"""

import sys

from common.cli import export_main, run_cli
from models.qwen3.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(export_main(FAMILY)))
