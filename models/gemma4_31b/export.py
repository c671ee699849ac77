"""`python -m models.gemma4_31b.export --help`"""

import sys

from common.cli import export_main, run_cli
from models.gemma4_31b.model import FAMILY

if __name__ == "__main__":
    sys.exit(run_cli(export_main(FAMILY)))
