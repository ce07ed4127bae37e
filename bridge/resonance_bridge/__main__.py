"""`python -m resonance_bridge`: a bridge from the environment, without the `resonance` command."""

import os
import sys

from . import logs
from .main import run

logs.setup(os.environ.get("RESONANCE_LOG_LEVEL", "INFO"))
sys.exit(run(os.environ))
