"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2.

Everything else (a bug) is allowed to raise a traceback: that is what we want to see in a bug report.
"""


class SqueezelabError(Exception):
    """Base class: a mistake in the user's input (path, option, file), reported as one line."""


class ConfigError(SqueezelabError, ValueError):
    """Unknown model/option/config key, or a value of the wrong type or out of range."""


class DataError(SqueezelabError):
    """A dataset folder or file is missing, has the wrong layout, or cannot be decoded."""


class WeightsError(SqueezelabError):
    """A weights/checkpoint file is missing, corrupt, or does not fit the model."""


class TrainingError(SqueezelabError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""
