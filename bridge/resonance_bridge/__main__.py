"""`python -m resonance_bridge`: a bridge from the environment, without the `resonance` command."""

import os
import sys

from . import logs
from .main import run

try:
    logs.setup(os.environ.get("RESONANCE_LOG_LEVEL", "INFO"), os.environ.get("RESONANCE_LOG_FORMAT", "text"))
except ValueError as exc:
    print(f"resonance bridge: {exc}", file=sys.stderr)
    sys.exit(2)
sys.exit(run(os.environ))
