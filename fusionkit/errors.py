"""fusionkit's own exceptions for input it judged unusable.

Every error raised where fusionkit judges a user's input (a file, a table row, a config key,
a checkpoint, a command-line argument) derives from :class:`UserError`, and its message names
the file, row, utterance or argument. The ``fusionkit`` command prints such an error as one
line and exits with status 2; any other exception is a bug and keeps its traceback.
Each subclass also derives from the builtin exception it refines (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working for library callers.
"""

from __future__ import annotations

import pickle


class UserError(Exception):
    """Input that fusionkit cannot use as it is; the message says which and why."""


class DataError(UserError, ValueError):
    """Data (features, labels, dialogues) that cannot be used: names the file or dialogue."""


class NonFiniteError(DataError):
    """NaN or infinity in the features of an utterance that has the modality."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named by the user that is not there."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used as it is: the message names the key."""


class CheckpointError(UserError, ValueError):
    """A file that is not a usable checkpoint: the message names the file."""


class TableError(DataError):
    """A conversation table that cannot be read as it is: names the file and row."""


class LayoutError(DataError):
    """A feature pickle whose layout is none of the known ones."""


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """A pickle that asks to build something other than plain data."""


class MediaError(DataError):
    """Recordings (audio, video) that could not be made into features: each line names the
    table row and the file; at most ``shown`` lines, then a count."""

    shown = 20

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = len(problems) - self.shown
        lines = problems[: self.shown] + ([f"... and {more} more"] if more > 0 else [])
        head = "" if len(problems) == 1 else f"{len(problems)} utterances have unusable data:\n"
        super().__init__(head + "\n".join(lines))


class DivergenceError(UserError, FloatingPointError):
    """Training that produced a non-finite loss or gradient: names the seed, epoch and step."""
