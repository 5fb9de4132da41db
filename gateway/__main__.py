"""``python -m gateway`` runs the ``ragate`` command."""

from gateway.cli import main

main()
