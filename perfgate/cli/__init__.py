"""The command line: ``perfgate.cli.main:main`` is the ``perfgate`` command."""
