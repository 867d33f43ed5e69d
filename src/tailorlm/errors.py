"""User-facing errors: one base class, caught once by the command line.

A `TailorError` is a problem the user can fix (a config key, a data file, a model folder, a run
directory); its message names what is wrong and the fix, and the command exits 2 with that one
line instead of a traceback. Everything else is a bug and keeps its traceback. Subclasses also
derive from the built-in exception a caller would expect (ValueError, FileExistsError, ...).
"""
from __future__ import annotations


class TailorError(Exception):
    """A problem the user can fix; the message names it and the fix."""

    exit_code = 2


class ConfigError(TailorError, ValueError):
    """A config problem; the message names the key and the fix."""


class DataError(TailorError, ValueError):
    """Bad input data; the message names the file, the line and the fix."""


class ModelError(TailorError, ValueError):
    """The model folder cannot be used; the message says why and what to do."""


class RunExistsError(TailorError, FileExistsError):
    """The output folder already holds something that would be replaced."""


class MissingError(TailorError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class NonFiniteError(TailorError, FloatingPointError):
    """Training stopped after too many steps with a non-finite loss or gradient."""


class OutOfMemory(TailorError, MemoryError):
    """A micro-batch did not fit; the message names settings that would."""
