"""``python -m bridge.cli``: the ``mailbridge`` command."""

import sys

from bridge.cli import main

sys.exit(main())
