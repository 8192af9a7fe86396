"""`python -m modeguard ...` is the `modeguard` command."""

from modeguard.cli import main

main()
