"""`python -m lmworker.serve`; see lmworker.serve.cli."""

import sys

from lmworker.serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
