"""``python -m tidekv``: the ``tide`` command line."""

from tidekv.cli_node import main

main()
