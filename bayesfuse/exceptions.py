"""Errors and warnings raised by bayesfuse.

Every error message names the problem *and* what to do next (lifelines style).
"""

from __future__ import annotations


class BayesFuseError(Exception):
    """Base class of every bayesfuse error."""


class DataError(BayesFuseError, ValueError):
    """Input data are malformed, misaligned or inconsistent with a fitted model."""


class NotFittedError(BayesFuseError, RuntimeError):
    """A method that needs a fitted model was called before ``fit``."""


class ModelFormatError(BayesFuseError, ValueError):
    """A saved model directory is missing files or has an unsupported format version."""


class ConvergenceError(BayesFuseError, RuntimeError):
    """Training diverged: non-finite loss or gradient persisted through the bounded retries; the message names
    the modality / head whose term was non-finite and what to change."""


class BayesFuseWarning(UserWarning):
    """Base class of bayesfuse warnings."""


class NoModalityWarning(BayesFuseWarning):
    """Some patients have no modality at all; they are scored from the prior and flagged."""


class ConvergenceWarning(BayesFuseWarning):
    """Training stopped without the validation loss settling, or produced a non-finite loss."""


class DataWarning(BayesFuseWarning):
    """Some input was left out or carries no information (e.g. an all-NaN training column, labels the
    model does not know); the message names it and says how to fix it."""


class OutputExistsError(BayesFuseError, FileExistsError):
    """An output folder (a saved model, predictions, a report) exists and overwriting was not asked for."""


class ArgumentError(BayesFuseError, ValueError):
    """An argument is out of range or not one of the allowed options (e.g. ``num_samples=0``)."""


class InputTypeError(BayesFuseError, TypeError):
    """An argument has the wrong type (e.g. a DataFrame where a ``MultiModalData`` is expected)."""
