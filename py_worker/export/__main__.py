"""`python -m py_worker.export ...`: the same as `hf-bridge export ...`."""

from py_worker.export.cli import main

main()
