"""``python -m riskguard`` is the ``riskguard`` command."""

import sys

from riskguard.cli import main

sys.exit(main())
