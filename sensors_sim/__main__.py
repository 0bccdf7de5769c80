"""``python -m sensors_sim``: see :mod:`sensors_sim.cli`."""

from __future__ import annotations

import sys

from sensors_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
