"""`python -m models.gemma4_31b.inference --help`"""

import sys

from common.cli import inference_main, run_cli
from models.gemma4_31b.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(inference_main(FAMILY)))
