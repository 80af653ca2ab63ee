"""``python -m poschan``: the command line."""

import sys

from poschan.cli import main

sys.exit(main())
