"""Errors a user can act on. Each carries a one-line message naming the file or key at fault;
the command line prints it without a traceback. Kept free of heavy imports so that the CLI can
catch them before torch and Detectron2 load."""


class InstsegError(Exception):
    """Base of every error whose message is meant for the user."""


class ConfigError(InstsegError, ValueError):
    """A config file, override, dataset declaration or option that cannot be used."""
