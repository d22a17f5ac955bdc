"""Exceptions raised by ferdata.

Every error a user can cause is a :class:`FerdataError`. Its ``exit_code`` tells the CLI how to
leave: 2 for bad usage or bad input named on the command line, 1 for a run that failed.
"""

from __future__ import annotations


class FerdataError(Exception):
    """Base class of every ferdata error; the CLI prints it as one line."""

    exit_code: int = 1


class UsageError(FerdataError, ValueError):
    """A bad value given by the user: names the value and what is allowed (exit code 2)."""

    exit_code = 2


class InputNotFound(UsageError):
    """An input path that does not exist or cannot be read."""


class OutputExists(UsageError):
    """An output directory that already exists (pass ``overwrite=True`` / ``--overwrite``)."""


class NotADatasetDir(UsageError):
    """A path that is not a ferdata / Hugging Face dataset directory."""


class ManifestError(UsageError):
    """A malformed manifest, label map or recipe file."""


class RecipeError(ManifestError):
    """A recipe with an unknown step or parameter, found before any work starts."""


class StepFailed(FerdataError):
    """A step could not finish (exit code 1)."""
