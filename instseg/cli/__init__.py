"""The ``instseg`` command line: one module per command group, the parser in ``commands``."""

from instseg.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
