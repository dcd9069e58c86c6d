"""``python -m dtmfguard``: the same as the ``dtmfguard`` console script."""

import sys

from dtmfguard.cli import main

sys.exit(main())
