"""``python -m RenderFMLib.cli`` (used by torchrun)."""

import sys

from . import main

sys.exit(main())
