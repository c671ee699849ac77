"""`python -m models.gemma4_31b.quantize_and_save --help`"""

import sys

from common.cli import quantize_main, run_cli
from models.gemma4_31b.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(quantize_main(FAMILY)))
