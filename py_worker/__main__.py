"""`python -m py_worker` runs the `hf-bridge` command line."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from py_worker.cli import main

    sys.exit(main())
