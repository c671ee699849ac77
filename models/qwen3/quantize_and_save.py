"""`python -m models.qwen3.quantize_and_save --help`"""

import sys

from common.cli import quantize_main, run_cli
from models.qwen3.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(quantize_main(FAMILY)))
