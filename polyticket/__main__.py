"""``python -m polyticket`` is the ``polyticket`` command (for environments without its script)."""

import sys

from polyticket.cli import main

sys.exit(main())
