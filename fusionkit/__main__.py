"""``python -m fusionkit``: the ``fusionkit`` command."""

import sys

from fusionkit.cli import main

sys.exit(main())
