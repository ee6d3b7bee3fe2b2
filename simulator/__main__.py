"""`python -m simulator` is `python -m simulator.replay`."""

import sys

from .replay import main

sys.exit(main())
