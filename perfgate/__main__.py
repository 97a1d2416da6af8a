"""``python -m perfgate`` is the ``perfgate`` command."""

from perfgate.cli.main import main

main()
