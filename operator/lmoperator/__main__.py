"""`python -m lmoperator ...` is `elasticlm ...`."""

import sys

from lmoperator.cli import main

sys.exit(main())
