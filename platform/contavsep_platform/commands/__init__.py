"""Subcommands of the `contavsep` CLI, one module per command group."""
