"""`python -m edge_anytime COMMAND ...`: the same as the `edge-anytime` command."""

import sys

from .cli import main

sys.exit(main())
