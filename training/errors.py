"""Errors that describe the user's input, not a bug: the command line answers them with one
line and a non-zero exit code instead of a traceback."""

from __future__ import annotations


class InputError(ValueError):
    """The input (a file, a flag, the data in the log) cannot be used as given; the message
    says what is wrong and, where it helps, what would work."""


class NotEnoughData(InputError):
    """The log is too small for a step; the message names the minimum the step needs."""
