"""The errors a user can fix. The command line turns each into one message and exit status 2.

They live at the bottom of the house because every layer raises them (a suite rejects its
config, a reader its data, the backbone a model name) and the command line above catches them.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input; the message names the problem and how to fix it."""


class ConfigError(UserError):
    """A configuration problem the user can fix; the message says how."""


class DataError(UserError):
    """Missing or malformed data; the message names the files and how to fix them."""


class UnknownNameError(UserError, KeyError):
    """A head, suite or loss name that is not registered (a KeyError too, for lookups that expect one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BackboneError(UserError):
    """A model name, pretrained tag or checkpoint that cannot be used."""
