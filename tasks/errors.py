"""Errors for per-item problems: the flow records them as ``failures`` rows and the batch goes on.

Raise ``InputError`` (or a subclass) for anything wrong with an input (a file, a manifest row, a mask, a clip);
only programming errors should escape as other exception types.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad input. ``input`` names it (a uri or an id); ``reason`` is a short machine-readable code."""

    def __init__(self, input: str, reason: str, message: str):
        self.input = input
        self.reason = reason
        self.message = message
        super().__init__(f"{input}: {message}")


class UnsupportedEditError(InputError):
    """An engine was asked for an edit type it cannot render."""
