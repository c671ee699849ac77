"""`python -m models.qwen3.inference --help`"""

import sys

from common.cli import inference_main, run_cli
from models.qwen3.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(inference_main(FAMILY)))
