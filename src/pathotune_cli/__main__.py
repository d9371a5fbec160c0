"""``python -m pathotune_cli`` runs the command line."""

from pathotune_cli.cli.app import main

main()
