"""`python -m models.llama3.inference --help`"""

import sys

from common.cli import inference_main, run_cli
from models.llama3.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(inference_main(FAMILY)))
