"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2 — or 1
for ``WriteError``, the environment refusing a write (disk full, read-only, permission), which is
not the user's input at fault.

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


class WriteError(SqueezelabError, OSError):
    """The environment refused a write: the path, the reason and what to change, in one line (exit 1).
    Raised by the atomic writers, so the file being replaced is still the previous version."""

    exit_code = 1

    @classmethod
    def of(cls, path, err: BaseException) -> "WriteError":
        reason = getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__
        hint = {28: "free space on that disk", 30: "choose a writable folder", 13: "choose a folder you may write",
                21: "it is a directory: name a file", 20: "a parent of it is a file"}.get(
            getattr(err, "errno", None), "free space or choose another folder")
        if "No space left" in reason:
            hint = "free space on that disk"
        return cls(f"cannot write {path}: {reason} ({hint}); the previous version of it, if any, is kept")
